//! Every string the web pages show, in English and Chinese: one constant per string, two
//! columns. Domain terms follow the Chinese certificates and JJF 1186 (认定值, 扩展不确定度,
//! 包含因子, 量值核查, 开封后 …). Ledger data is never translated, only the page's own words.

use rmledger_schema::date::Period;
use rmledger_schema::lifecycle::{Status, UnitStage};
use rmledger_schema::records::{EvidenceKind, RecordKind, Role, Severity, ValueKind, Verdict};

/// The page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// The `?lang=` value and the code used in links.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The `<html lang>` attribute.
    pub fn html_lang(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// `?lang=zh|en` (case-insensitive); anything else is ignored.
    pub fn from_query(value: &str) -> Option<Lang> {
        match value.to_ascii_lowercase().as_str() {
            "zh" | "zh-cn" | "cn" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language of the most preferred `Accept-Language` range that is Chinese or English
    /// (by q-value, then order); English when neither is asked for.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(f32, usize, Lang)> = None;
        for (position, item) in header.split(',').enumerate() {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let lang = if tag == "zh" || tag.starts_with("zh-") {
                Lang::Zh
            } else if tag == "en" || tag.starts_with("en-") {
                Lang::En
            } else {
                continue;
            };
            if q <= 0.0 {
                continue;
            }
            // Strictly greater: on equal q the earlier range wins.
            if best.is_none_or(|(best_q, _, _)| q > best_q) {
                best = Some((q, position, lang));
            }
        }
        best.map_or(Lang::En, |(_, _, lang)| lang)
    }

    pub fn t(self, text: Text) -> &'static str {
        match self {
            Lang::En => text.en,
            Lang::Zh => text.zh,
        }
    }

    /// The other language, for the switch link.
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        }
    }
}

/// One UI string in both languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text {
    pub en: &'static str,
    pub zh: &'static str,
}

macro_rules! texts {
    ($( $name:ident => $en:literal, $zh:literal; )*) => {
        $( pub const $name: Text = Text { en: $en, zh: $zh }; )*
        /// Every string, for the table's own test.
        #[cfg(test)]
        pub const ALL: &[(&str, Text)] = &[ $( (stringify!($name), $name) ),* ];
    };
}

texts! {
    // The page frame.
    LANGUAGE_SWITCH => "中文", "English";
    SITE => "rmledger", "rmledger 标准物质账本";
    NAV_FEDERATION => "Federation", "联盟";
    NAV_FINDINGS => "Findings", "审计发现";
    TIMES_IN => "Times are local time of the federation", "时间为联盟所在时区的当地时间";
    NOT_FOUND => "Not found", "未找到";
    NOT_FOUND_CERTIFICATE => "No certificate with this id is known to this node.", "本节点没有此编号的证书。";
    NOT_FOUND_UNIT => "This certificate has no unit with this serial.", "该证书没有此编号的单元。";
    NOT_FOUND_PAGE => "There is no page at this address.", "此地址没有页面。";
    AMBIGUOUS_PREFIX => "Several certificates start with this prefix; give more characters.", "多个证书以此前缀开头，请输入更长的编号。";
    BAD_ID => "A certificate id is 64 hexadecimal characters (or a unique prefix of at least 8).", "证书编号为 64 位十六进制字符（或至少 8 位的唯一前缀）。";
    SERVER_ERROR => "The node failed to build this page; see its log.", "节点生成此页面失败，请查看日志。";
    BACK_HOME => "Back to the federation overview", "返回联盟概览";

    // The certificate.
    CERTIFICATE => "Certificate", "证书";
    PRODUCT_INFORMATION_SHEET => "Product information sheet", "产品信息单";
    STATUS => "Status", "状态";
    STATUS_VALID => "Valid", "有效";
    STATUS_EXPIRED => "Expired", "已过期";
    STATUS_SUSPENDED => "Suspended", "暂停";
    STATUS_RECALLED => "Recalled", "召回";
    STATUS_WITHDRAWN => "Withdrawn", "撤销";
    STATUS_SUPERSEDED => "Superseded", "已被取代";
    STATUS_SINCE => "since", "自";
    REASON => "Reason", "原因";
    RM_CODE => "RM code", "标准物质编号";
    BATCH => "Batch", "批号";
    PRODUCER => "Producer", "生产者";
    MATRIX => "Matrix", "基体";
    ISSUE_DATE => "Issue date", "发布日期";
    CHARACTERIZATION_DATE => "Characterization date", "定值日期";
    INTENDED_USE => "Intended use", "预期用途";
    TRACEABILITY => "Traceability", "计量溯源性";
    STORAGE => "Storage", "储存条件";
    HANDLING => "Handling", "使用注意事项";
    APPROVED_BY => "Approved by", "批准人";
    REVISION => "Revision", "版本";
    REVISED_BECAUSE => "revised because", "修订原因";
    SUPERSEDED_BY => "Superseded by", "已被取代，新证书";
    SUPERSEDES => "Supersedes", "取代";
    CERTIFICATE_ID => "Certificate id", "证书标识";

    // Values.
    PROPERTY_VALUES => "Property values", "特性量值";
    QUANTITY => "Quantity", "特性";
    KIND => "Kind", "类别";
    VALUE => "Value", "量值";
    EXPANDED_UNCERTAINTY => "Expanded uncertainty U", "扩展不确定度 U";
    COVERAGE_FACTOR => "Coverage factor k", "包含因子 k";
    UNIT_OF_MEASURE => "Unit", "单位";
    METHOD => "Method", "测量方法";
    CERTIFIED_VALUE => "Certified value", "认定值";
    REFERENCE_VALUE => "Reference value", "参考值";
    INFORMATION_VALUE => "Information value", "信息值";
    VALUES_NOTE => "Reference values are printed in parentheses. Only certified values are certified with their expanded uncertainty U = k·u.", "括号内为参考值。仅认定值给出扩展不确定度 U = k·u 并经认定。";
    RELATIVE => "relative", "相对";

    // Validity.
    VALIDITY => "Validity", "有效期";
    EXPIRY_DATE => "Expiry date", "有效期至";
    AFTER_OPENING => "After opening", "开封后";
    VALID_FROM_CHARACTERIZATION => "from the characterization date", "自定值日期起";
    VALID_AFTER_DISPATCH => "each unit, counted from its dispatch", "每个单元自发运日起计";
    VALID_UNTIL_REVOKED => "until withdrawn by the producer", "直至生产者撤销";
    SINGLE_USE => "single use: use once, then discard", "一次性使用";
    UNTIL_EXPIRY => "usable until the certificate expires", "可使用至证书有效期止";
    NOT_STATED => "not stated", "未说明";

    // Verifications.
    VERIFICATIONS => "Value verification", "量值核查";
    INSTITUTE => "Institute", "核查机构";
    MEASURED => "Measured", "核查测得值";
    VERDICT => "Verdict", "结论";
    VERDICT_PASS => "pass", "通过";
    VERDICT_FAIL => "fail", "不通过";
    VERDICT_INCONCLUSIVE => "inconclusive", "无法判定";
    VERDICT_NONE => "none (not a certified value)", "不判定（非认定值）";
    STATED_VERDICT => "stated verdict", "声明结论";
    NO_VERIFICATIONS => "No value verification has been recorded.", "尚无量值核查记录。";
    EN_NOTE => "En uses both expanded uncertainties re-expanded with k = 2; |En| ≤ 1 passes. ζ is the difference over the combined standard uncertainty.", "En 按 k = 2 重新扩展双方不确定度计算，|En| ≤ 1 为通过；ζ 为差值除以合成标准不确定度。";

    // Units.
    UNITS => "Units", "单元";
    UNIT => "Unit", "单元";
    SERIAL => "Serial", "编号";
    STAGE => "Stage", "状态";
    HOLDER => "Holder", "持有者";
    STAGE_PRODUCED => "with the producer", "在生产者处";
    STAGE_SHIPPED => "shipped", "已发运";
    STAGE_RECEIVED => "received", "已接收";
    STAGE_OPENED => "opened", "已开封";
    STAGE_DISPOSED => "disposed of", "已处置";
    SHIPPED_TO => "Shipped to", "发运至";
    RECEIVED_BY => "Received by", "接收方";
    OPENED_AT => "Opened", "开封时间";
    USES => "Uses", "使用次数";
    LAST_USED => "Last used", "最近使用";
    DISPOSED_AT => "Disposed of", "处置时间";
    UNIT_VALID_UNTIL => "Unit valid until", "单元有效至";
    OPEN_VALID_UNTIL => "Usable after opening until", "开封后可使用至";
    UNITS_PRODUCED => "Units produced", "生产单元";
    UNITS_MOVED => "Units that have left the producer", "已离开生产者的单元";
    NO_UNITS_MOVED => "No unit has left the producer yet.", "尚无单元离开生产者。";
    UNIT_EVENTS => "This unit's events", "该单元的事件";
    UNIT_LOOKUP => "Each unit has its own page:", "每个单元有单独页面：";

    // Timeline.
    TIMELINE => "Timeline", "时间线";
    TIME => "Time", "时间";
    ORGANISATION => "Organisation", "机构";
    EVENT => "Event", "事件";
    DETAIL => "Detail", "详情";
    ANOMALY => "Anomaly", "异常";

    // Proof.
    PROOF => "What was verified", "验证情况";
    DOWNLOAD_BUNDLE => "Download the proof bundle (CBOR)", "下载证明包（CBOR）";
    BUNDLE_VERIFIED => "This node built the proof bundle below and verified it against federation", "本节点生成了下方的证明包，并依据联盟标识验证通过：";
    BUNDLE_ENTRIES => "entries of this certificate's life, each with an inclusion proof against a signed checkpoint", "条本证书的生命周期记录，每条均附有针对已签名检查点的包含证明";
    BUNDLE_COMPLETE => "Each chain's signed certificate map confirms that the bundle holds every entry about this certificate as of these checkpoints", "各链已签名的证书映射确认：截至这些检查点，证明包包含本证书的全部记录";
    BUNDLE_UNPROVEN => "no checkpoint known and no anchor names this chain: not proven to hold nothing about this certificate", "尚无已知检查点，也没有锚定记录提及此链：无法证明其中没有关于本证书的记录";
    BUNDLE_PENDING => "entries are newer than their chain's latest checkpoint and not in the bundle yet", "条记录晚于其链的最新检查点，尚未包含在证明包中";
    BUNDLE_FAILED => "The proof bundle could not be built or verified", "无法生成或验证证明包";
    CHECKPOINTS => "Checkpoints", "检查点";
    CHAIN => "Chain", "链";
    SIZE => "Size", "条目数";
    ANCHORS => "Anchors", "锚定";
    NO_ANCHORS => "no anchors yet", "尚无锚定";
    ANCHORED_BY => "witnessed by", "见证方";
    SCAN_QR => "Scan to open this page", "扫码打开本页";

    // Overview.
    FEDERATION => "Federation", "联盟";
    FEDERATION_ID => "Federation id", "联盟标识";
    REGISTRAR => "Registrar", "登记机构";
    THIS_NODE => "This node", "本节点";
    MEMBERS => "Members", "成员";
    NAME => "Name", "名称";
    ROLES => "Roles", "角色";
    MEMBER_SUSPENDED => "suspended", "已暂停";
    CHAINS => "Chains", "链";
    ROOT => "Root", "根哈希";
    LAST_CHECKPOINT => "Last checkpoint", "最新检查点";
    LAST_ANCHOR => "Last anchor", "最新锚定";
    FORK_EVIDENCE => "Fork evidence", "分叉证据";
    NO_FORK_EVIDENCE => "no fork evidence", "无分叉证据";
    EVIDENCE_NOTE => "Two validly signed objects contradict each other. Each chain named here is frozen on this node until the federation resolves it; nothing is resolved automatically.", "两个有效签名的对象相互矛盾。此处列出的链在本节点上已冻结，待联盟处理；系统不会自动处理。";
    EVIDENCE_KIND => "Kind", "类型";
    EVIDENCE_AT => "Position", "位置";
    EVIDENCE_OBJECTS => "Conflicting objects", "相互矛盾的对象";
    EVIDENCE_DETECTED => "Detected", "发现时间";
    EVIDENCE_ENTRIES => "fork: two entries at one position", "分叉：同一位置有两条记录";
    EVIDENCE_CHECKPOINTS => "checkpoint contradicts the chain", "检查点与链不一致";
    EVIDENCE_ANCHOR => "anchor contradicts the chain", "锚定与链不一致";
    AT_SIZE => "at size", "条目数";
    CERTIFICATES => "Certificates", "证书";
    NO_CERTIFICATES => "No certificate has been registered yet.", "尚无登记的证书。";
    MORE_NOT_SHOWN => "more not shown", "条未显示";

    // Findings.
    FINDINGS => "Findings", "审计发现";
    FINDINGS_NOTE => "The audit replayed every chain and checkpoint this node holds, from the genesis:", "审计从创世记录起重放了本节点持有的全部链和检查点：";
    ENTRIES_WORD => "entries", "条记录";
    CHECKPOINTS_WORD => "checkpoints", "个检查点";
    CERTIFICATES_WORD => "certificates", "个证书";
    SEVERITY => "Severity", "严重程度";
    SUBJECT => "Subject", "对象";
    SEVERITY_CRITICAL => "critical", "严重";
    SEVERITY_HIGH => "high", "高";
    SEVERITY_MEDIUM => "medium", "中";
    SEVERITY_LOW => "low", "低";
    SEVERITY_INFO => "info", "提示";
    NO_FINDINGS => "No findings.", "无审计发现。";
    RULE => "Rule", "规则";
    ENTRY => "Entry", "记录";

    // Roles.
    ROLE_REGISTRAR => "registrar", "登记机构";
    ROLE_PRODUCER => "producer", "生产者";
    ROLE_INSTITUTE => "institute", "计量院";
    ROLE_LAB => "lab", "实验室";
    ROLE_REGULATOR => "regulator", "监管机构";

    // Record kinds, as timeline events.
    KIND_ENROL => "enrolment", "成员登记";
    KIND_KEY_ADDED => "key added", "增加密钥";
    KIND_KEY_REVOKED => "key revoked", "吊销密钥";
    KIND_MEMBER_SUSPENDED => "member suspended", "成员暂停";
    KIND_MEMBER_REINSTATED => "member reinstated", "成员恢复";
    KIND_REGISTERED => "registered", "登记";
    KIND_REVISED => "revised", "修订";
    KIND_STABILITY => "stability check", "稳定性监测";
    KIND_VERIFICATION => "value verification", "量值核查";
    KIND_SUSPENDED => "suspended", "暂停";
    KIND_REINSTATED => "reinstated", "恢复";
    KIND_RECALLED => "recalled", "召回";
    KIND_WITHDRAWN => "withdrawn", "撤销";
    KIND_SHIPPED => "shipped", "发运";
    KIND_RECEIVED => "received", "接收";
    KIND_OPENED => "opened", "开封";
    KIND_USED => "used", "使用";
    KIND_DISPOSED => "disposed of", "处置";
    KIND_ANCHOR => "anchor", "锚定";
    KIND_FORK => "fork reported", "分叉报告";
    KIND_FINDING => "audit finding", "审计发现";
}

pub fn status(status: Status) -> Text {
    match status {
        Status::Valid => STATUS_VALID,
        Status::Expired => STATUS_EXPIRED,
        Status::Suspended => STATUS_SUSPENDED,
        Status::Recalled => STATUS_RECALLED,
        Status::Withdrawn => STATUS_WITHDRAWN,
        Status::Superseded => STATUS_SUPERSEDED,
    }
}

pub fn severity(severity: Severity) -> Text {
    match severity {
        Severity::Critical => SEVERITY_CRITICAL,
        Severity::High => SEVERITY_HIGH,
        Severity::Medium => SEVERITY_MEDIUM,
        Severity::Low => SEVERITY_LOW,
        Severity::Info => SEVERITY_INFO,
    }
}

pub fn value_kind(kind: ValueKind) -> Text {
    match kind {
        ValueKind::Certified => CERTIFIED_VALUE,
        ValueKind::Reference => REFERENCE_VALUE,
        ValueKind::Information => INFORMATION_VALUE,
    }
}

pub fn verdict(verdict: Option<Verdict>) -> Text {
    match verdict {
        Some(Verdict::Pass) => VERDICT_PASS,
        Some(Verdict::Fail) => VERDICT_FAIL,
        Some(Verdict::Inconclusive) => VERDICT_INCONCLUSIVE,
        None => VERDICT_NONE,
    }
}

pub fn stage(stage: UnitStage) -> Text {
    match stage {
        UnitStage::Produced => STAGE_PRODUCED,
        UnitStage::Shipped => STAGE_SHIPPED,
        UnitStage::Received => STAGE_RECEIVED,
        UnitStage::Opened => STAGE_OPENED,
        UnitStage::Disposed => STAGE_DISPOSED,
    }
}

pub fn evidence_kind(kind: EvidenceKind) -> Text {
    match kind {
        EvidenceKind::Entries => EVIDENCE_ENTRIES,
        EvidenceKind::Checkpoints => EVIDENCE_CHECKPOINTS,
        EvidenceKind::Anchor => EVIDENCE_ANCHOR,
    }
}

pub fn role(role: Role) -> Text {
    match role {
        Role::Registrar => ROLE_REGISTRAR,
        Role::Producer => ROLE_PRODUCER,
        Role::Institute => ROLE_INSTITUTE,
        Role::Lab => ROLE_LAB,
        Role::Regulator => ROLE_REGULATOR,
    }
}

pub fn record_kind(kind: RecordKind) -> Text {
    use RecordKind as K;
    match kind {
        K::Enrol => KIND_ENROL,
        K::KeyAdded => KIND_KEY_ADDED,
        K::KeyRevoked => KIND_KEY_REVOKED,
        K::MemberSuspended => KIND_MEMBER_SUSPENDED,
        K::MemberReinstated => KIND_MEMBER_REINSTATED,
        K::BatchRegistered => KIND_REGISTERED,
        K::CertificateRevised => KIND_REVISED,
        K::StabilityCheck => KIND_STABILITY,
        K::ValueVerification => KIND_VERIFICATION,
        K::Suspended => KIND_SUSPENDED,
        K::Reinstated => KIND_REINSTATED,
        K::Recalled => KIND_RECALLED,
        K::Withdrawn => KIND_WITHDRAWN,
        K::Shipped => KIND_SHIPPED,
        K::Received => KIND_RECEIVED,
        K::Opened => KIND_OPENED,
        K::Used => KIND_USED,
        K::Disposed => KIND_DISPOSED,
        K::Anchor => KIND_ANCHOR,
        K::ForkReported => KIND_FORK,
        K::AuditFinding => KIND_FINDING,
    }
}

/// A period in words: "5 years" / "5 年".
pub fn period(lang: Lang, period: &Period) -> String {
    match (lang, period) {
        (Lang::En, Period::Years(n)) => format!("{n} year{}", plural(*n)),
        (Lang::En, Period::Months(n)) => format!("{n} month{}", plural(*n)),
        (Lang::En, Period::Days(n)) => format!("{n} day{}", plural(*n)),
        (Lang::Zh, Period::Years(n)) => format!("{n} 年"),
        (Lang::Zh, Period::Months(n)) => format!("{n} 个月"),
        (Lang::Zh, Period::Days(n)) => format!("{n} 天"),
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// "use within 3 months of opening" / "开封后 3 个月内使用".
pub fn use_within(lang: Lang, p: &Period) -> String {
    match lang {
        Lang::En => format!("use within {} of first opening", period(lang, p)),
        Lang::Zh => format!("开封后 {} 内使用", period(lang, p)),
    }
}

/// "valid for 5 years from the characterization date" / "自定值日期起 5 年".
pub fn valid_for(lang: Lang, p: &Period, from: Text) -> String {
    match lang {
        Lang::En => format!("valid for {} {}", period(lang, p), from.en),
        Lang::Zh => format!("{}{} 内有效", from.zh, period(lang, p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_has_both_columns() {
        for (name, text) in ALL {
            assert!(!text.en.trim().is_empty(), "{name} has no English");
            assert!(!text.zh.trim().is_empty(), "{name} has no Chinese");
        }
    }

    #[test]
    fn domain_terms_are_the_agreed_ones() {
        for (text, zh) in [
            (CERTIFICATE, "证书"),
            (STATUS_VALID, "有效"),
            (STATUS_EXPIRED, "已过期"),
            (STATUS_SUSPENDED, "暂停"),
            (STATUS_RECALLED, "召回"),
            (STATUS_WITHDRAWN, "撤销"),
            (STATUS_SUPERSEDED, "已被取代"),
            (CERTIFIED_VALUE, "认定值"),
            (REFERENCE_VALUE, "参考值"),
            (INFORMATION_VALUE, "信息值"),
            (VERIFICATIONS, "量值核查"),
            (UNITS, "单元"),
            (TIMELINE, "时间线"),
            (AFTER_OPENING, "开封后"),
        ] {
            assert_eq!(text.zh, zh);
        }
        assert!(EXPANDED_UNCERTAINTY.zh.starts_with("扩展不确定度"));
        assert!(COVERAGE_FACTOR.zh.starts_with("包含因子"));
    }

    #[test]
    fn accept_language_picks_the_preferred_of_zh_and_en() {
        for (header, expected) in [
            ("zh-CN,zh;q=0.9,en;q=0.8", Lang::Zh),
            ("zh", Lang::Zh),
            ("zh-Hant-TW", Lang::Zh),
            ("en-US,en;q=0.9,zh-CN;q=0.8", Lang::En),
            ("fr-FR,fr;q=0.9,zh;q=0.5,en;q=0.4", Lang::Zh),
            ("en;q=0.3, zh-CN;q=0.7", Lang::Zh),
            ("zh;q=0, en", Lang::En),
            ("de", Lang::En),
            ("", Lang::En),
            ("*", Lang::En),
        ] {
            assert_eq!(Lang::from_accept_language(header), expected, "{header:?}");
        }
    }

    #[test]
    fn query_switch_accepts_zh_and_en_only() {
        assert_eq!(Lang::from_query("zh"), Some(Lang::Zh));
        assert_eq!(Lang::from_query("EN"), Some(Lang::En));
        assert_eq!(Lang::from_query("fr"), None);
    }
}
