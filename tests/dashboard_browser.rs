//! The dashboard in a real browser (issue 16): the pool binary on its embedded regtest chain
//! (blocks come quickly), our CPU miner as a second process, and Debian's chromium, headless,
//! driven over the DevTools protocol (`headless_chrome`; no browser is downloaded: the test
//! uses /usr/bin/chromium, which .ci/run installs). The miner's user is a payout address (a
//! page per user is a page per payout address). The page must show the worker with a non-zero
//! hashrate, its accept rate and last share, the node's tip and the template's age, and an
//! accepted block with its payouts; then the user's page its worker and its balance, without
//! one JavaScript error (console errors, uncaught exceptions and failed loads, collected
//! through the protocol); screenshots of the pages are saved as PNG under the test's output
//! directory. Then the pool restarts on the same data directory, without a miner: the
//! worker's hashrate history comes back from the ledger and the page draws it, again without
//! an error.

#[path = "common/binary.rs"]
mod binary;
#[path = "common/debian_package.rs"]
mod debian_package;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binary::PoolProcess;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::protocol::cdp::Runtime::ConsoleAPICalledEventTypeOption;
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// Debian's chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Network difficulty 2^-16: with shares at 10^-6 about one share in 15 is a block.
const CHAIN_BITS: &str = "0x1f00ffff";
/// The miner's user_identity: user BIP 173's regtest P2WPKH address (its payout address),
/// worker `rig1`.
const USER: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
const WORKER: &str = "rig1";
/// The pool's command line: any free ports, shares at difficulty 10^-6, the chain above.
const POOL_ARGS: [&str; 12] = [
    "--listen-addr",
    "127.0.0.1:0",
    "--min-difficulty",
    "1e-6",
    "--max-difficulty",
    "1e-6",
    "--share-rate-multiple",
    "1e9",
    "--chain-bits",
    CHAIN_BITS,
    "--http-listen-addr",
    "127.0.0.1:0",
];
/// How long the page may take to show what the test waits for.
const WAIT: Duration = Duration::from_secs(90);

/// The miner, killed when dropped.
struct Miner(Child);

impl Drop for Miner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the pool's line giving the dashboard's address; returns `host:port`.
fn dashboard_addr(pool: &mut PoolProcess) -> String {
    let mut seen = 0;
    loop {
        if seen == pool.seen.len() {
            pool.next_line(Duration::from_secs(60), "the dashboard's address");
        }
        let line = pool.seen[seen].clone();
        seen += 1;
        if let Some(rest) = line.strip_prefix("HTTP dashboard on http://") {
            return rest
                .split('/')
                .next()
                .expect("an address before the path")
                .to_owned();
        }
    }
}

/// What went wrong in the page, as the protocol reported it.
type Errors = Arc<Mutex<Vec<String>>>;

/// A headless chromium with a fresh profile in `profile`, its errors collected into the
/// returned list.
fn browser(profile: &Path) -> (Browser, Arc<Tab>, Errors) {
    // On a machine without it, Debian's package is installed first (as .ci/run does), so that
    // `cargo test` needs nothing installed by hand.
    debian_package::ensure("chromium", || Path::new(CHROMIUM).exists());
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing and installing Debian's chromium did not provide it: apt-get install chromium"
    );
    let args: Vec<&OsStr> = [
        "--disable-quic",
        "--disable-component-update",
        "--disable-background-networking",
        "--disable-sync",
        "--no-first-run",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    let options = LaunchOptions::default_builder()
        .path(Some(PathBuf::from(CHROMIUM)))
        .headless(true)
        .sandbox(false)
        .enable_gpu(false)
        .window_size(Some((1280, 1800)))
        .user_data_dir(Some(profile.to_path_buf()))
        .args(args)
        .idle_browser_timeout(Duration::from_secs(180))
        .build()
        .expect("launch options");
    let browser = Browser::new(options).expect("chromium starts");
    let tab = browser.new_tab().expect("a tab");
    tab.set_default_timeout(Duration::from_secs(30));
    let errors: Errors = Arc::default();
    let sink = errors.clone();
    tab.add_event_listener(Arc::new(move |event: &Event| {
        let error = match event {
            Event::RuntimeExceptionThrown(e) => Some(format!(
                "uncaught exception: {:?}",
                e.params.exception_details
            )),
            Event::RuntimeConsoleAPICalled(e)
                if matches!(
                    e.params.Type,
                    ConsoleAPICalledEventTypeOption::Error
                        | ConsoleAPICalledEventTypeOption::Assert
                ) =>
            {
                Some(format!("console.{:?}: {:?}", e.params.Type, e.params.args))
            }
            Event::LogEntryAdded(e)
                if matches!(
                    e.params.entry.level,
                    headless_chrome::protocol::cdp::Log::LogEntryLevel::Error
                ) =>
            {
                Some(format!(
                    "log error: {} {:?}",
                    e.params.entry.text, e.params.entry.url
                ))
            }
            _ => None,
        };
        if let Some(error) = error {
            sink.lock().unwrap().push(error);
        }
    }))
    .expect("a listener");
    tab.enable_runtime().expect("Runtime events");
    tab.enable_log().expect("Log events");
    (browser, tab, errors)
}

/// Evaluates `expression` (which returns a JSON string) in the page.
fn eval_json(tab: &Tab, expression: &str) -> serde_json::Value {
    let object = tab.evaluate(expression, false).expect("evaluated");
    match object.value {
        Some(serde_json::Value::String(s)) => serde_json::from_str(&s).expect("JSON"),
        other => panic!("{expression}: {other:?}"),
    }
}

/// Polls `expression` until `done` holds of its value; panics with the last value after
/// [`WAIT`].
fn wait_for(
    tab: &Tab,
    what: &str,
    expression: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = eval_json(tab, expression);
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show {what} in {WAIT:?}; last: {value}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn screenshot(tab: &Tab, path: &Path) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("a screenshot");
    std::fs::write(path, png).expect("screenshot written");
    println!("screenshot: {}", path.display());
}

/// The worker rows of the page's workers table: (user, worker, hashrate, declared hashrate,
/// refusal reasons, accept rate and last share texts).
const WORKER_ROWS: &str = r#"JSON.stringify(Array.from(document.querySelectorAll('#workers tbody tr')).map(r => ({
    user: r.dataset.user || null,
    worker: r.dataset.worker,
    hashrate: (r.querySelector('td.hashrate') || {}).textContent || '',
    declared: (r.querySelector('td.declared') || {}).textContent || '',
    reasons: (r.querySelector('td.reasons') || {}).textContent || '',
    rate: (r.querySelector('td.rate') || {}).textContent || '',
    last_share: (r.querySelector('td.last-share') || {}).textContent || ''
})))"#;

/// The page's cards: label → value text.
const CARDS: &str = r#"JSON.stringify(Object.fromEntries(Array.from(document.querySelectorAll('#cards .card')).map(c =>
    [(c.querySelector('.label') || {}).textContent || '', (c.querySelector('.value') || {}).textContent || ''])))"#;

/// The blocks table's rows: hash, status badge text, the payouts cell's text and the users it
/// lists.
const BLOCK_ROWS: &str = r#"JSON.stringify(Array.from(document.querySelectorAll('#blocks tbody tr')).map(r => ({
    hash: r.dataset.hash,
    status: (r.querySelector('.badge') || {}).textContent || '',
    payouts: (r.cells[r.cells.length - 1] || {}).textContent || '',
    paid: Array.from(r.cells[r.cells.length - 1].querySelectorAll('li a')).map(a => a.textContent)
})))"#;

/// The number of lines and points drawn from the history (not the page's live samples) in
/// each chart of the page.
const HISTORY_CHARTS: &str = r#"JSON.stringify({
    pool_chart: document.querySelectorAll('#pool-chart polyline:not(.live), #pool-chart circle:not(.live)').length,
    worker_chart: document.querySelectorAll('#worker-chart polyline:not(.live), #worker-chart circle:not(.live)').length
})"#;

/// Whether a card's value is shown: present, and not the "–" of a value not known yet.
fn card_shown(cards: &serde_json::Value, label: &str) -> bool {
    cards[label]
        .as_str()
        .is_some_and(|v| !v.trim().is_empty() && v != "–")
}

/// Whether a row shows our worker with a hashrate above zero (and the 1 MH/s it declared),
/// its refusal reasons ("–" for none), an accept rate and a last share.
fn shows_worker(rows: &serde_json::Value, user: Option<&str>) -> bool {
    rows.as_array().into_iter().flatten().any(|r| {
        r["worker"] == WORKER
            && user.is_none_or(|u| r["user"] == u)
            && r["declared"] == "1.00 MH/s"
            && r["reasons"].as_str().is_some_and(|t| !t.is_empty())
            && r["rate"].as_str().is_some_and(|t| t.ends_with(" %"))
            && r["last_share"]
                .as_str()
                .is_some_and(|t| t.ends_with(" ago"))
            && r["hashrate"]
                .as_str()
                .and_then(|h| h.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
                .is_some_and(|n| n > 0.0)
    })
}

#[test]
fn the_dashboard_shows_the_worker_and_its_blocks_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = PoolProcess::start(dir.path(), &POOL_ARGS);
    let http = dashboard_addr(&mut pool);
    let miner = Miner(
        Command::new(env!("CARGO_BIN_EXE_blvm-stratum-v2"))
            .args([
                "miner",
                "--url",
                &pool.addr,
                "--authority-pubkey",
                &pool.key,
                "--user",
                &format!("{USER}.{WORKER}"),
                "--threads",
                "1",
                // Shown in the workers table as the hashrate the worker declares.
                "--nominal-hash-rate",
                "1000000",
                "--duration",
                "300",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the miner starts"),
    );

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard_browser");
    std::fs::create_dir_all(&out).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (_browser, tab, errors) = browser(profile.path());

    // ----- the pool's page: the worker with a hashrate, a block in the blocks table -----
    tab.navigate_to(&format!("http://{http}/"))
        .expect("navigated")
        .wait_until_navigated()
        .expect("loaded");
    let rows = wait_for(&tab, "the worker with a hashrate", WORKER_ROWS, |rows| {
        shows_worker(rows, Some(USER))
    });
    // An accepted block whose payouts cell lists the user (the ledger pays it after the
    // node's verdict; the table is read again as blocks are found and decided).
    let blocks = wait_for(
        &tab,
        "an accepted block with its payouts",
        BLOCK_ROWS,
        |b| {
            b.as_array().into_iter().flatten().any(|r| {
                r["status"] == "accepted"
                    && r["payouts"].as_str().is_some_and(|p| p.contains("user(s)"))
                    && r["paid"]
                        .as_array()
                        .is_some_and(|paid| paid.iter().any(|u| u == USER))
            })
        },
    );
    let cards = wait_for(&tab, "the node's tip and the template's age", CARDS, |c| {
        card_shown(c, "Node tip") && card_shown(c, "Template age")
    });
    assert!(
        cards["Node tip"]
            .as_str()
            .and_then(|t| t.parse::<u32>().ok())
            .is_some_and(|h| h > 0),
        "{cards}"
    );
    assert!(
        cards["Template age"]
            .as_str()
            .is_some_and(|t| t.ends_with(" s")),
        "{cards}"
    );
    // The live feed is up and the charts are drawn (a line or a point each).
    let page = eval_json(
        &tab,
        r#"JSON.stringify({
            live: document.getElementById('live').textContent,
            pool_chart: document.querySelectorAll('#pool-chart polyline, #pool-chart circle').length,
            worker_chart: document.querySelectorAll('#worker-chart polyline, #worker-chart circle').length,
            cards: document.querySelectorAll('#cards .card').length
        })"#,
    );
    assert_eq!(page["live"], "live", "{page}");
    assert!(page["pool_chart"].as_u64() > Some(0), "{page}");
    assert!(page["worker_chart"].as_u64() > Some(0), "{page}");
    // Let a few more summaries arrive (and any late error surface) before the picture.
    std::thread::sleep(Duration::from_secs(3));
    screenshot(&tab, &out.join("pool.png"));
    println!("workers: {rows}\nblocks: {blocks}\ncards: {cards}");

    // ----- the user's page: its worker -----
    tab.navigate_to(&format!("http://{http}/user/{USER}"))
        .expect("navigated")
        .wait_until_navigated()
        .expect("loaded");
    wait_for(&tab, "the user's worker", WORKER_ROWS, |rows| {
        shows_worker(rows, None)
    });
    let user_page = wait_for(
        &tab,
        "the user's window and balance",
        r#"JSON.stringify({
            name: document.getElementById('user-name').textContent,
            window: document.querySelectorAll('#window dt').length
        })"#,
        |p| p["window"].as_u64() > Some(1),
    );
    assert_eq!(user_page["name"], USER, "{user_page}");
    let user_cards = wait_for(&tab, "the user's balance", CARDS, |c| {
        card_shown(c, "Balance")
    });
    assert!(
        user_cards["Balance"]
            .as_str()
            .is_some_and(|b| b.ends_with(" BTC")),
        "{user_cards}"
    );
    std::thread::sleep(Duration::from_secs(2));
    screenshot(&tab, &out.join("user.png"));

    let seen = errors.lock().unwrap().clone();
    assert!(seen.is_empty(), "JavaScript errors in the page: {seen:#?}");

    // ----- after a restart the charts are not empty: the ledger's shares come back -----
    drop(miner);
    pool.signal(libc::SIGTERM);
    let status = pool.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let mut pool = PoolProcess::start(dir.path(), &POOL_ARGS);
    let http = dashboard_addr(&mut pool);
    let url = format!("http://{http}/api/v1/hashrate?user={USER}&worker={WORKER}");
    let deadline = Instant::now() + WAIT;
    loop {
        tab.navigate_to(&url)
            .expect("navigated")
            .wait_until_navigated()
            .expect("loaded");
        let history = eval_json(&tab, "document.body.textContent");
        let points = history["points"].as_array().cloned().unwrap_or_default();
        if points.iter().any(|p| p["hashrate"].as_f64() > Some(0.0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no history after the restart: {history}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The pool's page draws that history (even when it all falls in the current five-minute
    // period), and the navigation raises no error.
    errors.lock().unwrap().clear();
    tab.navigate_to(&format!("http://{http}/"))
        .expect("navigated")
        .wait_until_navigated()
        .expect("loaded");
    let charts = wait_for(&tab, "the charts after the restart", HISTORY_CHARTS, |c| {
        c["pool_chart"].as_u64() > Some(0) && c["worker_chart"].as_u64() > Some(0)
    });
    std::thread::sleep(Duration::from_secs(2));
    screenshot(&tab, &out.join("restarted.png"));
    println!("charts after the restart: {charts}");
    let seen = errors.lock().unwrap().clone();
    assert!(
        seen.is_empty(),
        "JavaScript errors in the page after the restart: {seen:#?}"
    );
    pool.signal(libc::SIGTERM);
    let status = pool.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}
