//! The web pages as a person sees them: a real `rmledger-node` with a demo ledger (a valid
//! certificate with a verification and a shipment, a recalled one, one whose name is hostile
//! HTML), read over HTTP and in headless Chromium driven through WebDriver (chromedriver on
//! 127.0.0.1), on a phone-sized screen. Screenshots go to `tests/artifacts/web-*.png`.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them). Without them this test fails, saying so: it never passes silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmledger_schema::decimal::Decimal;
use rmledger_schema::ids::{CertificateId, PublicKey};
use rmledger_schema::records::{Enrol, Record, Role, Shipped, StatusChange, Uncertainty};
use rmledger_schema::testkit::{TestFederation, org, serials, soil_certificate};
use rmledger_schema::units::Unit;
use serde_json::{Value, json};

const HOSTILE_NAME: &str = r#"<script>alert(1)</script>"><img src=x onerror=alert(1)>"#;
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

// ---------------------------------------------------------------------------------------------
// The node

use rmledger_tests::{node_binary, spawn_run};

/// A running node in its own temporary directory; killed on drop.
struct Node {
    child: Child,
    url: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// One registrar node holding every role (institute, producer, lab, regulator).
    fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let node_dir = dir.path().join("node");
        let init = Command::new(node_binary())
            .args(["init", "--dir"])
            .arg(&node_dir)
            .args([
                "--org",
                "jxim",
                "--registrar",
                "--federation-name",
                "江西标准物质联盟 (demo)",
                "--org-name",
                "江西省计量测试研究院",
                "--roles",
                "institute,producer,lab,regulator",
                "--listen",
                "127.0.0.1:0",
                "--json",
            ])
            .output()
            .expect("running rmledger-node init");
        assert!(
            init.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let report: Value = serde_json::from_slice(&init.stdout).expect("init --json output");
        let token = report["operator_token"].as_str().unwrap().to_owned();
        let (child, url) = spawn_run(
            &node_dir.join("node.toml"),
            &dir.path().join("node-stderr.log"),
        )
        .unwrap_or_else(|e| panic!("the node did not start: {e}"));
        Node {
            child,
            url,
            token,
            _dir: dir,
        }
    }

    async fn write(&self, http: &reqwest::Client, record: &Record) -> String {
        let response = http
            .post(format!("{}/v1/records", self.url))
            .bearer_auth(&self.token)
            .json(&serde_json::to_value(record).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "writing {:?}: {body}", record.kind());
        body["id"].as_str().unwrap().to_owned()
    }
}

fn http_client() -> reqwest::Client {
    // reqwest is built with rustls and no crypto provider; plain http never uses it, but
    // building a client needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn cert_id(hex: &str) -> CertificateId {
    CertificateId::from_hex(hex).unwrap()
}

/// The demo ledger's certificate ids.
struct Demo {
    valid: String,
    recalled: String,
    hostile: String,
}

async fn write_demo(node: &Node, http: &reqwest::Client) -> Demo {
    let lab_key = TestFederation::with_members().keys[&org("nclab")].verifying_key();
    node.write(
        http,
        &Record::Enrol(Enrol {
            org: org("nclab"),
            keys: vec![PublicKey(lab_key.to_bytes())],
            name: "华北检测实验室".into(),
            roles: vec![Role::Lab],
        }),
    )
    .await;
    let valid = node
        .write(http, &Record::BatchRegistered(soil_certificate("2025a")))
        .await;
    node.write(
        http,
        &Record::ValueVerification(rmledger_schema::records::ValueVerification {
            cert: cert_id(&valid),
            unit: Unit::parse("mg/kg").unwrap(),
            value: Decimal::parse("0.23").unwrap(),
            method: Some("ICP-MS".into()),
            report: Some("JXIM-2026-017".into()),
            sample: Some("S-0100".into()),
            verdict: None,
            quantity: "Cd".into(),
            revision: 1,
            uncertainty: Uncertainty {
                expanded: Decimal::parse("0.02").unwrap(),
                relative: false,
                coverage_factor: Decimal::parse("2").unwrap(),
                coverage_probability: None,
            },
        }),
    )
    .await;
    node.write(
        http,
        &Record::Shipped(Shipped {
            to: org("nclab"),
            cert: cert_id(&valid),
            serials: serials("S-0001..S-0003"),
        }),
    )
    .await;
    let recalled = node
        .write(http, &Record::BatchRegistered(soil_certificate("2025b")))
        .await;
    node.write(
        http,
        &Record::Recalled(StatusChange {
            cert: cert_id(&recalled),
            reason: "Cd drift found in stability monitoring".into(),
        }),
    )
    .await;
    let mut hostile = soil_certificate("2025x");
    hostile.name = HOSTILE_NAME.into();
    hostile.name_en = Some(HOSTILE_NAME.into());
    hostile.matrix = Some("<b>bold</b> & <i>'quoted'</i>".into());
    let hostile = node.write(http, &Record::BatchRegistered(hostile)).await;
    Demo {
        valid,
        recalled,
        hostile,
    }
}

// ---------------------------------------------------------------------------------------------
// A small WebDriver client

/// chromedriver on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(http: &reqwest::Client) -> Driver {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).is_file(),
                "{path} is missing: the web test needs Debian's `{package}` package \
                 (apt-get install -y chromium chromium-driver; .ci/run installs it)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{url}/status")).send().await.ok();
            if let Some(r) = ready
                && let Ok(body) = r.json::<Value>().await
                && body["value"]["ready"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready on {url} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver {
            child,
            url,
            _profile: profile,
        }
    }

    /// A headless phone-sized Chromium (412 × 915 CSS px, mobile viewport rules).
    async fn session(&self, http: &reqwest::Client) -> Browser {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", self._profile.path().display()),
                    "--window-size=412,915", "--lang=en-US",
                ],
                "mobileEmulation": {"deviceMetrics": {
                    "width": 412, "height": 915, "pixelRatio": 1.0, "mobile": true, "touch": true
                }},
                "prefs": {"intl.accept_languages": "en-US,en"},
            },
        }}});
        let response: Value = http
            .post(format!("{}/session", self.url))
            .json(&capabilities)
            .send()
            .await
            .expect("POST /session to chromedriver")
            .json()
            .await
            .unwrap();
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver could not start Chromium: {response}"))
            .to_owned();
        Browser {
            http: http.clone(),
            base: format!("{}/session/{session}", self.url),
        }
    }
}

struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request.send().await.unwrap().json().await.unwrap();
        response["value"].clone()
    }

    async fn goto(&self, url: &str) {
        let value = self
            .call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
        assert!(value.is_null(), "navigating to {url}: {value}");
    }

    /// Runs a script in the page (WebDriver's own channel, not subject to the page's CSP).
    async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The rendered text of the first element matching `css`, as a person reads it.
    async fn text(&self, css: &str) -> String {
        let element = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = element
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css:?} on the page: {element}"))
            .to_owned();
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn count(&self, css: &str) -> u64 {
        let script = format!(
            "return document.querySelectorAll({}).length;",
            serde_json::to_string(css).unwrap()
        );
        self.eval(&script).await.as_u64().unwrap()
    }

    /// Whether an alert dialog is open (an injected script would have opened one).
    async fn alert_open(&self) -> bool {
        let value = self.call(reqwest::Method::GET, "/alert/text", None).await;
        value.get("error").is_none()
    }

    /// Whether the page fits the phone's width (no sideways scrolling).
    async fn fits_width(&self) -> bool {
        self.eval("return document.documentElement.scrollWidth <= window.innerWidth;")
            .await
            .as_bool()
            .unwrap()
    }

    /// A full-page PNG in tests/artifacts/web-{name}.png.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let full = self
            .call(
                reqwest::Method::POST,
                "/goog/cdp/execute",
                Some(json!({"cmd": "Page.getLayoutMetrics", "params": {}})),
            )
            .await;
        let size = &full["cssContentSize"];
        let data = match (size["width"].as_f64(), size["height"].as_f64()) {
            (Some(width), Some(height)) => self
                .call(
                    reqwest::Method::POST,
                    "/goog/cdp/execute",
                    Some(json!({"cmd": "Page.captureScreenshot", "params": {
                        "format": "png", "captureBeyondViewport": true,
                        "clip": {"x": 0, "y": 0, "width": width, "height": height.min(8000.0), "scale": 1},
                    }})),
                )
                .await["data"]
                .clone(),
            _ => self.call(reqwest::Method::GET, "/screenshot", None).await,
        };
        let png = data_encoding::BASE64
            .decode(data.as_str().expect("screenshot data").as_bytes())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("web-{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_read_right_on_a_phone_in_both_languages() {
    let http = http_client();
    let node = Node::start();
    let demo = write_demo(&node, &http).await;
    let base = node.url.clone();

    // Over plain HTTP: status codes, headers, language negotiation and raw escaping.
    let get = |path: String, lang: Option<&'static str>| {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(lang) = lang {
            request = request.header("accept-language", lang);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            (status, headers, response.text().await.unwrap())
        }
    };
    let (status, headers, html) = get(format!("/c/{}", demo.valid), Some("zh-CN,zh;q=0.9")).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(html.contains("认定值") && html.contains(r#"<html lang="zh-CN">"#));
    let (status, _, html) = get(format!("/c/{}", "0".repeat(64)), None).await;
    assert_eq!(status, 404);
    assert!(html.contains("Not found"), "{html}");
    let (status, _, html) = get(format!("/c/{}?lang=zh", "0".repeat(64)), None).await;
    assert_eq!(status, 404);
    assert!(html.contains("未找到"));
    let (status, _, _) = get("/c/not-an-id".into(), None).await;
    assert_eq!(status, 404);
    let (status, headers, _) = get(format!("/c/{}", &demo.valid[..10]), None).await;
    assert_eq!(status, 303, "a unique prefix redirects");
    assert_eq!(headers["location"], format!("/c/{}", demo.valid).as_str());
    let (status, _, _) = get(format!("/c/{}/u/NO-SUCH", demo.valid), None).await;
    assert_eq!(status, 404);
    let (status, _, html) = get(format!("/c/{}", demo.hostile), None).await;
    assert_eq!(status, 200);
    assert!(
        !html.contains("<script>alert(1)"),
        "hostile text reached the page unescaped"
    );
    assert!(
        !html.contains("<img src=x"),
        "hostile text reached the page unescaped"
    );
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let (_, _, openapi) = get("/openapi.json".into(), None).await;
    for route in [
        "\"/c/{id}\"",
        "\"/c/{id}/u/{serial}\"",
        "\"/findings\"",
        "\"/\"",
    ] {
        assert!(
            openapi.contains(route),
            "{route} missing from /openapi.json"
        );
    }

    // In the browser, as a person sees it.
    let driver = Driver::start(&http).await;
    let browser = driver.session(&http).await;
    let mut shots = Vec::new();

    // The valid certificate, in English (the browser asks for en-US).
    browser.goto(&format!("{base}/c/{}", demo.valid)).await;
    assert_eq!(browser.text(".status-line .badge").await, "Valid");
    let values = browser.text("table.values tbody tr.certified").await;
    for shown in ["Cd", "0.21", "0.01", "k = 2", "mg/kg", "Certified value"] {
        assert!(
            values.contains(shown),
            "{shown:?} not in the certified row: {values:?}"
        );
    }
    let reference = browser.text("table.values tbody tr.reference").await;
    assert!(
        reference.contains("(75)") && reference.contains("Reference value"),
        "{reference:?}"
    );
    let body = browser.text("body").await;
    for shown in [
        "Expiry date",
        "2030-06-30",
        "After opening",
        "Value verification",
        "0.89",
        "pass",
        "Timeline",
        "shipped 3 units (S-0001..S-0003) to nclab",
        "no anchors yet",
        "Download the proof bundle",
    ] {
        assert!(
            body.contains(shown),
            "{shown:?} not on the certificate page"
        );
    }
    assert_eq!(
        browser.count("figure.qr svg").await,
        1,
        "the QR code is shown"
    );
    assert_eq!(browser.count("a[href$='/bundle']").await, 1);
    assert!(
        browser.fits_width().await,
        "the certificate page scrolls sideways on a phone"
    );
    shots.push(browser.screenshot("certificate-en").await);

    // The same page in Chinese; links keep the language.
    browser
        .goto(&format!("{base}/c/{}?lang=zh", demo.valid))
        .await;
    assert_eq!(browser.text(".status-line .badge").await, "有效");
    let body = browser.text("body").await;
    for shown in [
        "证书",
        "认定值",
        "参考值",
        "扩展不确定度",
        "包含因子",
        "量值核查",
        "单元",
        "时间线",
        "开封后",
        "通过",
    ] {
        assert!(body.contains(shown), "{shown:?} not on the Chinese page");
    }
    assert_eq!(
        browser
            .count("header nav a[href='/findings?lang=zh']")
            .await,
        1,
        "links keep ?lang=zh"
    );
    assert!(browser.fits_width().await);
    shots.push(browser.screenshot("certificate-zh").await);

    // A recalled certificate says so, in both languages.
    browser.goto(&format!("{base}/c/{}", demo.recalled)).await;
    assert_eq!(browser.text(".status-line .badge").await, "Recalled");
    assert!(browser.text(".notice").await.contains("Cd drift"));
    shots.push(browser.screenshot("recalled-en").await);
    browser
        .goto(&format!("{base}/c/{}?lang=zh", demo.recalled))
        .await;
    assert_eq!(browser.text(".status-line .badge").await, "召回");

    // One unit's life.
    browser
        .goto(&format!("{base}/c/{}/u/S-0001", demo.valid))
        .await;
    let body = browser.text("body").await;
    for shown in ["Unit S-0001", "shipped", "华北检测实验室", "Shipped to"] {
        assert!(body.contains(shown), "{shown:?} not on the unit page");
    }
    assert!(browser.fits_width().await);
    shots.push(browser.screenshot("unit").await);

    // The federation overview.
    browser.goto(&format!("{base}/")).await;
    let body = browser.text("body").await;
    for shown in [
        "江西标准物质联盟 (demo)",
        "jxim",
        "nclab",
        "华北检测实验室",
        "no fork evidence",
        "GBW(E)082345",
    ] {
        assert!(body.contains(shown), "{shown:?} not on the overview");
    }
    assert!(browser.fits_width().await);
    shots.push(browser.screenshot("overview").await);

    // Findings from the audit engine: the recalled and the hostile certificate were never
    // verified (a low finding each); the verified one is not listed.
    browser.goto(&format!("{base}/findings?lang=zh")).await;
    let findings = browser.text("table.findings").await;
    assert!(findings.contains("domain/never-verified"), "{findings}");
    assert!(
        findings.contains(&demo.recalled) && !findings.contains(&demo.valid),
        "{findings}"
    );
    shots.push(browser.screenshot("findings-zh").await);

    // The 404 page, in the chosen language.
    browser
        .goto(&format!("{base}/c/{}?lang=zh", "0".repeat(64)))
        .await;
    assert_eq!(browser.text("h1").await, "未找到");
    shots.push(browser.screenshot("not-found-zh").await);

    // Hostile text is shown as text: no element, no script, no alert.
    browser.goto(&format!("{base}/c/{}", demo.hostile)).await;
    assert_eq!(browser.text("h1").await, HOSTILE_NAME);
    assert!(
        browser
            .text("body")
            .await
            .contains("<script>alert(1)</script>")
    );
    assert_eq!(
        browser.count("script").await,
        0,
        "a script element was injected"
    );
    assert_eq!(browser.count("img").await, 0, "an img element was injected");
    assert_eq!(
        browser.count("b, i").await,
        0,
        "markup in the matrix was rendered"
    );
    assert!(!browser.alert_open().await, "an alert opened");
    shots.push(browser.screenshot("hostile").await);

    browser.quit().await;
    for shot in &shots {
        eprintln!("screenshot: {}", shot.display());
    }
}
