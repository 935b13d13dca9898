//! Helper of `scripts/bench-catchup`:
//!
//! - `write URL TOKEN COUNT CONCURRENCY`: writes COUNT small Anchor records through the API,
//!   CONCURRENCY requests in flight (the node group-commits them).
//! - `wait URL CHAIN SIZE TIMEOUT_S`: polls `GET /v1/chains` (every 2–20 ms, closer together
//!   near the end) until CHAIN holds SIZE entries; prints the seconds it took.
//! - `verify-rate SECONDS`: the raw `verify_strict` rate of this machine over 1,000 distinct
//!   signed messages the size of an entry's COSE Sig_structure, on one thread and on every core
//!   (and the CPU time of one check on one thread, which does not depend on how busy the
//!   machine is, and the every-core rate over one message checked again and again); prints
//!   `one-thread all-cores threads cpu-µs all-cores-one-message`.

use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey};
use rmledger_schema::ids::{OrgId, TreeHash};
use rmledger_schema::records::{Anchor, Record};

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") => {
            write(
                &args[1],
                &args[2],
                args[3].parse().unwrap(),
                args[4].parse().unwrap(),
            )
            .await
        }
        Some("wait") => {
            wait(
                &args[1],
                &args[2],
                args[3].parse().unwrap(),
                args[4].parse().unwrap(),
            )
            .await
        }
        Some("verify-rate") => verify_rate(args[1].parse().unwrap()),
        _ => {
            eprintln!(
                "usage: catchup_load write URL TOKEN COUNT CONCURRENCY | wait URL CHAIN SIZE TIMEOUT_S | verify-rate SECONDS"
            );
            std::process::exit(2);
        }
    }
}

async fn write(url: &str, token: &str, count: u64, concurrency: usize) {
    let client = client();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        while tasks.len() >= concurrency {
            tasks.join_next().await.unwrap().unwrap();
        }
        let record = serde_json::to_value(Record::Anchor(Anchor {
            root: TreeHash(*blake3_like(i)),
            size: i + 1,
            chain: OrgId::new("bench-ghost").unwrap(),
        }))
        .unwrap();
        let request = client
            .post(format!("{url}/v1/records"))
            .bearer_auth(token)
            .json(&record);
        tasks.spawn(async move {
            for _ in 0..20 {
                match request.try_clone().unwrap().send().await {
                    Ok(resp) if resp.status().as_u16() == 201 => return,
                    Ok(resp) if resp.status().as_u16() == 503 => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Ok(resp) => panic!("write refused: {}", resp.status()),
                    Err(e) => panic!("write failed: {e}"),
                }
            }
            panic!("write kept being refused with 503");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "wrote {count} entries in {s:.1} s ({:.0}/s)",
        count as f64 / s
    );
}

fn blake3_like(i: u64) -> Box<[u8; 32]> {
    let mut root = [0u8; 32];
    root[..8].copy_from_slice(&i.to_be_bytes());
    Box::new(root)
}

async fn wait(url: &str, chain: &str, size: u64, timeout_s: u64) {
    let client = client();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_s);
    loop {
        let mut held = 0;
        if let Ok(resp) = client.get(format!("{url}/v1/chains")).send().await
            && let Ok(rows) = resp.json::<serde_json::Value>().await
        {
            held = rows
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["chain"] == chain)
                .find_map(|r| r["size"].as_u64())
                .unwrap_or(0);
        }
        if held >= size {
            println!("{:.3}", started.elapsed().as_secs_f64());
            return;
        }
        if Instant::now() > deadline {
            eprintln!("timed out after {timeout_s} s");
            std::process::exit(1);
        }
        tokio::time::sleep(poll_delay(started.elapsed(), held, size)).await;
    }
}

/// How long to wait before polling again: half the time the rest should take at the rate seen so
/// far, between 2 and 20 ms. Few polls while far from the end (each one is a request the
/// measured node serves), and the end seen within ~2 ms.
fn poll_delay(elapsed: Duration, held: u64, size: u64) -> Duration {
    let (fast, slow) = (Duration::from_millis(2), Duration::from_millis(20));
    if held == 0 {
        return slow;
    }
    let rest = elapsed.mul_f64((size - held) as f64 / held as f64 / 2.0);
    rest.clamp(fast, slow)
}

fn verify_rate(seconds: f64) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = key.verifying_key();
    // A page's worth of distinct messages the size of an anchor entry's Sig_structure, each
    // signed: what catching up verifies. One message checked over and over is 2-3 % faster on
    // this host (the branch predictor learns its scalars), so it is measured too, as the best
    // case, but the rate read is over distinct signatures.
    let signed: Vec<(Vec<u8>, Signature)> = (0..SIGNED_MESSAGES as u32)
        .map(|i| {
            let mut message = vec![0x5au8; 260];
            message[..4].copy_from_slice(&i.to_be_bytes());
            let signature = key.sign(&message);
            (message, signature)
        })
        .collect();
    let run = |deadline: Instant, distinct: bool| {
        let mut n = 0usize;
        while Instant::now() < deadline {
            for _ in 0..100 {
                let (message, signature) = &signed[if distinct { n % signed.len() } else { 0 }];
                public.verify_strict(message, signature).unwrap();
                n += 1;
            }
        }
        n as u64
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = |distinct: bool| {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let checks: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| s.spawn(move || run(deadline, distinct)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        checks as f64 / seconds
    };
    let cpu_before = thread_cpu_seconds();
    let single = run(Instant::now() + Duration::from_secs_f64(seconds), true);
    // CPU time per check on this thread: what a check costs, however busy the machine is.
    let cpu_us = (thread_cpu_seconds() - cpu_before) * 1e6 / single as f64;
    let one = single as f64 / seconds;
    let distinct = all(true);
    let same = all(false);
    println!("{one:.0} {distinct:.0} {threads} {cpu_us:.1} {same:.0}");
}

/// How many distinct signed messages the raw rate cycles through (a page of entries).
const SIGNED_MESSAGES: usize = 1000;

/// User + system CPU time of the calling thread, from `/proc/thread-self/stat` (fields 14 and
/// 15, in clock ticks of 1/100 s on Linux).
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    (fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0)) / 100.0
}
