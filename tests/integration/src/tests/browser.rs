//! Issue #9: `timetracer timeline`, `dashboard` and `serve` in a real browser (Debian's
//! headless Chromium driven through chromedriver by fantoccini).
//!
//! The pages render the sample cassettes (screenshots are written to
//! `target/ui-screenshots/`, or `TIMETRACER_SCREENSHOTS`); filters and sorting change the
//! visible rows; cassettes whose every string carries an XSS payload render as inert text
//! with no script run; `serve` refuses paths outside its directory and actions without the
//! token, listens on loopback only, and its replay button returns a real verdict from
//! `timetracer-agent replay-server`.
//!
//! Needs `chromium` and `chromedriver` (`cargo xtask install` installs them) and the
//! `timetracer` binary (`TIMETRACER_CLI`). Without them the tests skip with a message, or fail
//! under `TIMETRACER_REQUIRE_PRIVILEGED=1`.
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::util::{self, Paths, ProcGuard};

const RICH: &str = "POST__orders_17_checkout__7d1c9a52.json";
const XSS: &str = "GET__x_script_img__0bad0bad.json";

/// Why the browser tests cannot run here, if they cannot.
fn missing(paths: &Paths) -> Option<String> {
    if !paths.cli.is_file() {
        return Some(format!(
            "{} not found (build it, or set TIMETRACER_CLI)",
            paths.cli.display()
        ));
    }
    for b in ["chromium", "chromedriver"] {
        if util::which(b).is_none() {
            return Some(format!(
                "{b} is not installed (`cargo xtask install` installs Debian's chromium and chromium-driver)"
            ));
        }
    }
    None
}

macro_rules! require_browser {
    () => {{
        let paths = Paths::from_env();
        crate::require!(missing(&paths));
        paths
    }};
}

fn screenshots_dir(paths: &Paths) -> PathBuf {
    let d = std::env::var_os("TIMETRACER_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths.repo.join("target/ui-screenshots"));
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

/// A cassette directory with the CLI fixtures (`py/`, `ours/`) and the UI fixtures (`ui/`).
fn fixture_dir(paths: &Paths, root: &Path) -> PathBuf {
    let dir = root.join("cassettes");
    for (from, to) in [
        ("tests/fixtures/cassettes/py", "py"),
        ("tests/fixtures/cassettes/ours", "ours"),
        ("tests/fixtures/ui", "ui"),
    ] {
        std::fs::create_dir_all(dir.join(to)).unwrap();
        for e in std::fs::read_dir(paths.repo.join(from)).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().ends_with(".json") {
                std::fs::copy(e.path(), dir.join(to).join(e.file_name())).unwrap();
            }
        }
    }
    dir
}

fn cli(paths: &Paths, args: &[&str]) -> String {
    let out = Command::new(&paths.cli)
        .args(args)
        .output()
        .expect("run timetracer");
    assert!(
        out.status.success(),
        "timetracer {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `body` with a fresh headless Chromium.
fn with_browser<F, Fut>(root: &Path, body: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Client>,
{
    let port = util::free_port();
    let mut driver = ProcGuard::spawn(
        "chromedriver",
        util::command("chromedriver", [format!("--port={port}")]),
        root,
    )
    .expect("spawn chromedriver");
    driver
        .wait_for_port(port, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", driver.diagnostics()));
    let profile = root.join("chromium-profile");
    let downloads = root.join("downloads");
    std::fs::create_dir_all(&downloads).expect("downloads dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": util::which("chromium").unwrap(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1500,1200",
                         format!("--user-data-dir={}", profile.display())],
                "prefs": {"download.default_directory": downloads.display().to_string(),
                          "download.prompt_for_download": false},
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}\n{}", driver.diagnostics()));
        let client = body(client).await;
        let _ = client.close().await;
    });
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

async fn shot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let p = dir.join(format!("{name}.png"));
    std::fs::write(&p, png).expect("write screenshot");
    eprintln!("screenshot: {}", p.display());
}

/// Polls `script` (which returns a boolean) for up to 15 s.
async fn wait_js(c: &Client, what: &str, script: &str) {
    let t = Instant::now();
    loop {
        if js(c, script).await == Value::Bool(true) {
            return;
        }
        if t.elapsed() > Duration::from_secs(15) {
            let text = js(c, "return document.body.innerText").await;
            panic!(
                "timed out waiting for {what}; page text:\n{}",
                text.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

const VISIBLE_ROWS: &str =
    "return Array.from(document.querySelectorAll('#tbody tr')).filter(t => !t.hidden).length";

async fn visible_rows(c: &Client) -> u64 {
    js(c, VISIBLE_ROWS).await.as_u64().expect("row count")
}

/// What a script-injection attempt would have left behind.
const NO_SCRIPT_RAN: &str = r#"
const handlers = Array.from(document.querySelectorAll('*')).filter(e =>
    Array.from(e.attributes).some(a => a.name.toLowerCase().startsWith('on'))).length;
return {
  xss: window.__xss === undefined ? null : String(window.__xss),
  title: document.title,
  images: document.images.length,
  scripts: document.scripts.length,
  handlers: handlers,
  jsLinks: document.querySelectorAll('[href^="javascript:" i], [src^="javascript:" i], [action^="javascript:" i]').length,
  iframes: document.querySelectorAll('iframe, object, embed').length,
};"#;

async fn assert_inert(c: &Client, scripts: u64, where_: &str) {
    let r = js(c, NO_SCRIPT_RAN).await;
    assert_eq!(r["xss"], Value::Null, "{where_}: a payload ran: {r}");
    // The payloads set the title to exactly this; the page's own title merely quotes them.
    assert_ne!(r["title"], json!("PWNED"), "{where_}: a payload ran: {r}");
    assert_eq!(
        r["images"],
        json!(0),
        "{where_}: an <img> was injected: {r}"
    );
    assert_eq!(
        r["scripts"],
        json!(scripts),
        "{where_}: script elements: {r}"
    );
    assert_eq!(
        r["handlers"],
        json!(0),
        "{where_}: event handler attributes: {r}"
    );
    assert_eq!(r["jsLinks"], json!(0), "{where_}: javascript: URLs: {r}");
    assert_eq!(r["iframes"], json!(0), "{where_}: embedded documents: {r}");
}

#[test]
fn timeline_renders_the_sample_cassettes() {
    let paths = require_browser!();
    let tmp = util::temp_dir("ui-timeline");
    let shots = screenshots_dir(&paths);
    let cases = [
        (
            "tests/fixtures/ui",
            RICH,
            "POST",
            "/orders/17/checkout?dry_run=0",
            "500 · exception",
        ),
        (
            "tests/fixtures/cassettes/py",
            "GET__users_42__e92ca5c8.json",
            "GET",
            "/users/42",
            "200",
        ),
        (
            "tests/fixtures/cassettes/py",
            "GET__boom_5__90588dcc.json",
            "GET",
            "/boom/5",
            "exception",
        ),
        (
            "tests/fixtures/cassettes/py",
            "GET__db_then_http__a97386d6.json",
            "GET",
            "/db-then-http",
            "200",
        ),
        (
            "tests/fixtures/cassettes/ours",
            "POST__login_caf__e92ca5c8.json",
            "POST",
            "/login/caf%C3%A9",
            "200",
        ),
    ];
    let mut pages = Vec::new();
    for (dir, file, method, target, status) in cases {
        let html = tmp.path().join(file.replace(".json", ".html"));
        let out = cli(
            &paths,
            &[
                "timeline",
                paths.repo.join(dir).join(file).to_str().unwrap(),
                "-o",
                html.to_str().unwrap(),
            ],
        );
        assert!(out.contains("Timeline written"), "{out}");
        pages.push((html, file, method, target, status));
    }
    with_browser(tmp.path(), |c| async move {
        for (html, file, method, target, status) in &pages {
            c.goto(&format!("file://{}", html.display())).await.unwrap();
            let head = js(&c, "return [document.querySelector('.c-head .method').textContent, document.querySelector('h2.target').textContent, document.querySelector('.c-head .status').textContent]").await;
            assert_eq!(head[0], json!(method), "{file}");
            assert!(
                head[1].as_str().unwrap().starts_with(target),
                "{file}: {head}"
            );
            assert_eq!(head[2], json!(status), "{file}");
            let deps = js(
                &c,
                "return Array.from(document.querySelectorAll('.dep')).map(e => e.textContent)",
            )
            .await;
            for d in deps.as_array().unwrap() {
                assert!(
                    !d.as_str().unwrap().to_lowercase().contains("unknown"),
                    "{file}: {deps}"
                );
            }
            assert_inert(&c, 1, file).await;
            shot(
                &c,
                &shots,
                &format!("timeline-{}", file.trim_end_matches(".json")),
            )
            .await;
        }
        // The rich one: every dependency type, kernel timings, parallel calls, the traceback.
        let (html, ..) = &pages[0];
        c.goto(&format!("file://{}", html.display())).await.unwrap();
        let deps = js(&c, "return Array.from(document.querySelectorAll('details.ev .dep')).map(e => e.textContent)").await;
        assert_eq!(
            deps,
            json!([
                "PostgreSQL",
                "Redis",
                "HTTPS",
                "HTTP",
                "MySQL",
                "MongoDB",
                "PostgreSQL"
            ])
        );
        let text = js(&c, "return document.body.innerText").await;
        let text = text.as_str().unwrap();
        for needle in [
            "ZeroDivisionError: division by zero",
            "up to 2 in parallel",
            "SELECT id, price, quantity FROM orders WHERE id = $1",
            "GET cart:17",
            "GET https://pricing.internal:8443/price/17?currency=EUR",
            "503 Service Unavailable",
            "ambiguous",
            "sudo timetracer-agent replay ",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        // Open the first call: SQL, kernel timings, parameters.
        c.find(Locator::Css("details.ev:not(.inbound) > summary"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let open = js(
            &c,
            "return document.querySelector('details.ev[open]:not(.inbound)').innerText",
        )
        .await;
        let open = open.as_str().unwrap();
        for needle in [
            "first response byte",
            "request sent",
            "SELECT 1",
            "Parameters",
            "in parallel with",
        ] {
            assert!(open.contains(needle), "missing {needle:?} in:\n{open}");
        }
        // The bars are laid out by the kernel offsets.
        let bars = js(&c, "return Array.from(document.querySelectorAll('details.ev:not(.inbound) rect.bar')).map(r => [r.getAttribute('x'), r.getAttribute('width')])").await;
        assert_eq!(bars[0][0], json!("2.463%"), "{bars}");
        shot(&c, &shots, "timeline-rich-open").await;
        c
    });
}

#[test]
fn dashboard_filters_sorts_and_shows_details() {
    let paths = require_browser!();
    let tmp = util::temp_dir("ui-dashboard");
    let shots = screenshots_dir(&paths);
    let dir = fixture_dir(&paths, tmp.path());
    let html = tmp.path().join("dashboard.html");
    let out = cli(
        &paths,
        &[
            "dashboard",
            "--dir",
            dir.to_str().unwrap(),
            "-o",
            html.to_str().unwrap(),
        ],
    );
    assert!(out.contains("Cassettes: 6 shown of 6"), "{out}");
    with_browser(tmp.path(), |c| async move {
        c.goto(&format!("file://{}", html.display())).await.unwrap();
        assert_eq!(visible_rows(&c).await, 6);
        let cards = js(&c, "return document.querySelector('#cards').innerText").await;
        assert!(cards.as_str().unwrap().contains("6\nrequests"), "{cards}");
        shot(&c, &shots, "dashboard").await;

        let set = |sel: &'static str, v: &'static str| {
            let c = c.clone();
            async move {
                js(&c, &format!("const e = document.querySelector('{sel}'); e.value = {v:?}; e.dispatchEvent(new Event('input', {{bubbles: true}})); return true")).await;
            }
        };
        let clear = || {
            let c = c.clone();
            async move {
                c.find(Locator::Id("f-clear"))
                    .await
                    .unwrap()
                    .click()
                    .await
                    .unwrap();
            }
        };
        // Endpoint search.
        c.find(Locator::Id("f-q"))
            .await
            .unwrap()
            .send_keys("users")
            .await
            .unwrap();
        assert_eq!(visible_rows(&c).await, 1);
        clear().await;
        assert_eq!(visible_rows(&c).await, 6);
        // Status class: exceptions (the Python tool's status 0, and our tracebacks).
        c.find(Locator::Css("input.f-class[value=exception]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(visible_rows(&c).await, 3);
        c.find(Locator::Css("input.f-class[value='2xx']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(visible_rows(&c).await, 6);
        clear().await;
        // Method, dependency type, duration.
        set("#f-method", "POST").await;
        assert_eq!(visible_rows(&c).await, 2);
        clear().await;
        set("#f-dep", "postgres").await;
        assert_eq!(visible_rows(&c).await, 2);
        set("#f-dep", "sql").await;
        assert_eq!(visible_rows(&c).await, 1);
        clear().await;
        set("#f-dmin", "20").await;
        assert_eq!(visible_rows(&c).await, 3);
        set("#f-dmax", "30").await;
        assert_eq!(visible_rows(&c).await, 1);
        clear().await;
        // Time range: everything was recorded on 2026-11-22/23.
        set("#f-range", "custom").await;
        set("#f-from", "2026-11-23T00:00:00").await;
        assert!(visible_rows(&c).await <= 2);
        clear().await;
        // Sorting by duration: descending, then ascending.
        let durations = "return Array.from(document.querySelectorAll('#tbody tr')).filter(t => !t.hidden).map(t => t.querySelector('td.num').textContent.trim())";
        c.find(Locator::Css("th[data-sort=d] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let d = js(&c, durations).await;
        assert_eq!(d[0], json!("48.7 ms"), "{d}");
        assert_eq!(d[5], json!("4.21 ms"), "{d}");
        c.find(Locator::Css("th[data-sort=d] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let d = js(&c, durations).await;
        assert_eq!(d[0], json!("4.21 ms"), "{d}");
        // Sorting by endpoint.
        c.find(Locator::Css("th[data-sort=p] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let eps = js(&c, "return Array.from(document.querySelectorAll('#tbody tr td.ep')).map(t => t.textContent)").await;
        let eps: Vec<String> = eps
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let mut sorted = eps.clone();
        sorted.sort();
        assert_eq!(eps, sorted);

        // Detail view: dependency calls, traceback, raw JSON, the replay command.
        c.find(Locator::XPath(
            "//td[@class='ep']/button[starts-with(., '/orders/17/checkout')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        let detail = js(&c, "return document.querySelector('#detail').innerText").await;
        let detail = detail.as_str().unwrap();
        for needle in [
            "ZeroDivisionError: division by zero",
            "PostgreSQL",
            "MongoDB",
            "Redis",
            "sudo timetracer-agent replay ",
            "Raw JSON",
        ] {
            assert!(
                detail.contains(needle),
                "missing {needle:?} in detail:\n{detail}"
            );
        }
        let raw = js(&c, "const r = document.querySelector('#detail pre.json'); return [r.querySelectorAll('span.jk').length, r.textContent.includes('\"schema_version\": \"2.0\"')]").await;
        assert!(
            raw[0].as_u64().unwrap() > 50 && raw[1] == json!(true),
            "{raw}"
        );
        c.find(Locator::Css("#detail button[data-copy$='-cmd']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        shot(&c, &shots, "dashboard-detail").await;

        // Compare two requests side by side.
        assert_eq!(
            js(&c, "return document.querySelector('#compare').disabled").await,
            json!(true)
        );
        let boxes = c.find_all(Locator::Css("input.cmp")).await.unwrap();
        boxes[0].click().await.unwrap();
        boxes[1].click().await.unwrap();
        c.find(Locator::Id("compare"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(
            js(
                &c,
                "return document.querySelectorAll('#detail .compare-cols > div article').length"
            )
            .await,
            json!(2)
        );
        shot(&c, &shots, "dashboard-compare").await;
        c
    });
}

#[test]
fn xss_payloads_render_as_inert_text() {
    let paths = require_browser!();
    let tmp = util::temp_dir("ui-xss");
    let dir = fixture_dir(&paths, tmp.path());
    let xss = dir.join("ui").join(XSS);
    let timeline = tmp.path().join("xss-timeline.html");
    let dashboard = tmp.path().join("xss-dashboard.html");
    cli(
        &paths,
        &[
            "timeline",
            xss.to_str().unwrap(),
            "-o",
            timeline.to_str().unwrap(),
        ],
    );
    cli(
        &paths,
        &[
            "dashboard",
            "--dir",
            dir.to_str().unwrap(),
            "-o",
            dashboard.to_str().unwrap(),
        ],
    );
    let shots = screenshots_dir(&paths);
    with_browser(tmp.path(), |c| async move {
        // Timeline: payloads are visible as text, nothing ran, even with every section open.
        c.goto(&format!("file://{}", timeline.display()))
            .await
            .unwrap();
        assert_inert(&c, 1, "timeline").await;
        let target = js(&c, "return document.querySelector('h2.target').textContent").await;
        assert!(
            target
                .as_str()
                .unwrap()
                .contains("</script><script>window.__xss='script'"),
            "{target}"
        );
        assert!(
            target.as_str().unwrap().contains("<img src=x onerror="),
            "{target}"
        );
        js(
            &c,
            "document.querySelectorAll('details').forEach(d => d.open = true); return true",
        )
        .await;
        let text = js(&c, "return document.body.innerText").await;
        let text = text.as_str().unwrap();
        for needle in [
            "javascript:window.__xss='js'",
            "SELECT '</script><script>",
            "ValueError: <img src=x",
        ] {
            assert!(text.contains(needle), "missing {needle:?}");
        }
        // Clicking the text of a javascript: URL does nothing.
        let url = c.current_url().await.unwrap();
        let el = c
            .find(Locator::XPath("//dd[starts-with(., 'javascript:')]"))
            .await
            .unwrap();
        el.click().await.unwrap();
        assert_eq!(c.current_url().await.unwrap(), url);
        assert_inert(&c, 1, "timeline, all open").await;
        shot(&c, &shots, "xss-timeline").await;

        // Dashboard: the JSON data block, the rows, the trend chart and the detail.
        c.goto(&format!("file://{}", dashboard.display()))
            .await
            .unwrap();
        assert_inert(&c, 2, "dashboard").await;
        let data = js(
            &c,
            "return JSON.parse(document.getElementById('tt-data').textContent).rows.map(r => r.p)",
        )
        .await;
        assert!(data.to_string().contains("</script><script>"), "{data}");
        c.find(Locator::XPath(
            "//td[@class='ep']/button[starts-with(., '/x</script>')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        js(
            &c,
            "document.querySelectorAll('#detail details').forEach(d => d.open = true); return true",
        )
        .await;
        let detail = js(&c, "return document.querySelector('#detail').innerText").await;
        assert!(
            detail
                .as_str()
                .unwrap()
                .contains("onerror=\"window.__xss='img'"),
            "{detail}"
        );
        // Filtering by a payload is plain text matching too.
        c.find(Locator::Id("f-q"))
            .await
            .unwrap()
            .send_keys("<img")
            .await
            .unwrap();
        assert_eq!(visible_rows(&c).await, 1);
        assert_inert(&c, 2, "dashboard, detail open").await;
        shot(&c, &shots, "xss-dashboard").await;
        c
    });
}

/// `timetracer serve` started on a free port; the URL it printed.
struct Serve {
    proc: ProcGuard,
    url: String,
    port: u16,
}

fn start_serve(paths: &Paths, dir: &Path, log: &Path, socket: &Path) -> Serve {
    let cmd = util::command(
        &paths.cli,
        [
            "serve",
            "--dir",
            dir.to_str().unwrap(),
            "--port",
            "0",
            "--replay-socket",
            socket.to_str().unwrap(),
        ],
    );
    let proc = ProcGuard::spawn("serve", cmd, log).expect("spawn serve");
    let t = Instant::now();
    loop {
        if let Some(url) = proc
            .stdout_text()
            .lines()
            .find_map(|l| l.split(" at ").nth(1).filter(|_| l.starts_with("Serving")))
        {
            let url = url.trim().to_owned();
            let port = url
                .trim_start_matches("http://127.0.0.1:")
                .split('/')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port in the URL");
            return Serve { proc, url, port };
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "serve did not start:\n{}",
            proc.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One plain HTTP request (no cookie): status code.
fn http_status(port: u16, raw: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn serve_refuses_outside_paths_and_tokenless_actions_and_updates_live() {
    let paths = require_browser!();
    let tmp = util::temp_dir("ui-serve");
    let dir = fixture_dir(&paths, tmp.path());
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(
        outside.join("secret.json"),
        r#"{"schema_version":"2.0","secret":1}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.join("secret.json"), dir.join("link.json")).unwrap();
    let socket = tmp.path().join("no-replay-service.sock");
    let serve = start_serve(&paths, &dir, tmp.path(), &socket);
    let port = serve.port;
    // Without the token nothing answers, not even the page.
    let get = |path: &str| {
        http_status(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
        )
    };
    assert_eq!(get("/"), 401);
    assert_eq!(get("/api/rows"), 401);
    assert_eq!(
        get("/api/detail?f=ui/POST__orders_17_checkout__7d1c9a52.json"),
        401
    );
    let shots = screenshots_dir(&paths);
    let url = serve.url.clone();
    let new_file = dir.join("py/GET__users_42__livecopy.json");
    let src = dir.join("py/GET__users_42__e92ca5c8.json");
    with_browser(tmp.path(), |c| async move {
        c.goto(&url).await.unwrap();
        // The token moved into a cookie and out of the address bar.
        let here = c.current_url().await.unwrap();
        assert_eq!(here.as_str(), format!("http://127.0.0.1:{port}/"));
        assert_eq!(visible_rows(&c).await, 6);
        assert_inert(&c, 2, "serve").await;

        // Paths outside the directory, from the page itself (cookie attached).
        let probe = r#"
            const f = async (q) => (await fetch('/api/detail?f=' + encodeURIComponent(q))).status;
            const out = {};
            for (const q of ['../outside/secret.json', '../../../../etc/passwd', '/etc/passwd',
                             'link.json', 'py/../../outside/secret.json', '.timetracer-index.sqlite3',
                             'py/GET__users_42__e92ca5c8.json']) { out[q] = await f(q); }
            out.timeline = (await fetch('/timeline?f=' + encodeURIComponent('../outside/secret.json'))).status;
            return out;"#;
        let st = js(&c, probe).await;
        assert_eq!(st["py/GET__users_42__e92ca5c8.json"], json!(200), "{st}");
        for (k, v) in st.as_object().unwrap() {
            if k != "py/GET__users_42__e92ca5c8.json" {
                let code = v.as_u64().unwrap();
                assert!(matches!(code, 400 | 403 | 404), "{k} answered {code}: {st}");
            }
        }
        assert_eq!(st["link.json"], json!(403), "{st}");
        // Actions need the token header: the cookie alone (a forged request) is refused.
        let actions = r#"
            const body = JSON.stringify({file: 'ui/POST__orders_17_checkout__7d1c9a52.json'});
            const post = async (h) => (await fetch('/api/replay', {method: 'POST', body, headers: h})).status;
            return [await post({'content-type': 'application/json'}),
                    await post({'content-type': 'application/json', 'x-timetracer-token': 'wrong'})];"#;
        assert_eq!(js(&c, actions).await, json!([403, 403]));

        // New cassettes appear without a reload.
        std::fs::copy(&src, &new_file).unwrap();
        wait_js(&c, "the new cassette's row", "return document.querySelectorAll('#tbody tr').length === 7 && !!document.querySelector('#tbody tr.new')").await;
        shot(&c, &shots, "serve-live").await;

        // Replay without the service: the page says how to start it.
        c.find(Locator::XPath(
            "//td[@class='ep']/button[starts-with(., '/orders/17/checkout')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        wait_js(
            &c,
            "the detail",
            "return !!document.querySelector('#detail button[data-replay]')",
        )
        .await;
        c.find(Locator::Css("#detail button[data-replay]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_js(
            &c,
            "the replay answer",
            "return !!document.querySelector('#detail .verdict')",
        )
        .await;
        let v = js(
            &c,
            "return document.querySelector('#detail .verdict').innerText",
        )
        .await;
        let v = v.as_str().unwrap();
        assert!(v.contains("The replay service is not running"), "{v}");
        assert!(
            v.contains("sudo timetracer-agent replay-server --socket"),
            "{v}"
        );
        shot(&c, &shots, "serve-replay-not-running").await;

        // Compare, with the differences `timetracer diff` finds.
        let boxes = c.find_all(Locator::Css("input.cmp")).await.unwrap();
        boxes[0].click().await.unwrap();
        boxes[1].click().await.unwrap();
        c.find(Locator::Id("compare"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_js(
            &c,
            "the comparison",
            "return document.querySelectorAll('#detail .compare-cols article').length === 2",
        )
        .await;
        shot(&c, &shots, "serve-compare").await;
        c
    });
    drop(serve.proc);
}

/// The addresses a TCP port listens on, from `/proc/net/tcp{,6}` (state 0A = LISTEN).
fn listening_addresses(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for l in text.lines().skip(1) {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local = cols
                .get(1)
                .filter(|_| cols.get(3) == Some(&"0A"))
                .and_then(|c| c.split_once(':'));
            if let Some((addr, _)) = local.filter(|(_, p)| u16::from_str_radix(p, 16) == Ok(port)) {
                out.push(addr.to_owned());
            }
        }
    }
    out
}

#[test]
fn serve_is_not_reachable_on_a_non_loopback_address() {
    let paths = require_browser!();
    let tmp = util::temp_dir("ui-loopback");
    let dir = fixture_dir(&paths, tmp.path());
    let serve = start_serve(&paths, &dir, tmp.path(), &tmp.path().join("none.sock"));
    // Bound to 127.0.0.1 only (0100007F in /proc/net/tcp), not 0.0.0.0 or ::.
    assert_eq!(listening_addresses(serve.port), vec!["0100007F".to_owned()]);
    drop(serve.proc);

    // And from a network namespace of our own with a non-loopback address: that address is
    // refused while 127.0.0.1 answers.
    if !nix::unistd::geteuid().is_root() {
        util::skip_or_fail("the network-namespace half of this test needs root");
        return;
    }
    let script = r#"
set -u
ip link set lo up
ip link add tt0 type dummy
ip addr add 10.254.77.1/24 dev tt0
ip link set tt0 up
"$CLI" serve --dir "$DIR" --port 0 --replay-socket "$DIR/none.sock" > "$OUT" 2>&1 &
pid=$!
for i in $(seq 100); do grep -q '^Serving' "$OUT" && break; sleep 0.1; done
port=$(sed -n 's/^Serving .* at http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' "$OUT")
echo "port=$port"
echo "loopback=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/")"
curl -s -o /dev/null --max-time 5 "http://10.254.77.1:$port/"
echo "other=$?"
kill $pid
wait $pid 2>/dev/null
"#;
    let out = Command::new("unshare")
        .args(["--net", "--", "bash", "-c", script])
        .env("CLI", &paths.cli)
        .env("DIR", &dir)
        .env("OUT", tmp.path().join("serve-netns.out"))
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("loopback=401"),
        "127.0.0.1 must answer (401 without token):\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // curl exit 7: failed to connect (refused).
    assert!(
        text.contains("other=7"),
        "the non-loopback address must refuse:\n{text}"
    );
}

/// Why the agent cannot run the replay service, if it cannot: `replay-server --help` fails.
fn replay_server_missing(paths: &Paths) -> Option<String> {
    match Command::new(&paths.agent)
        .args(["replay-server", "--help"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`{} replay-server --help` exited with {}: the agent has no replay service \
             (TIMETRACER_AGENT must be a timetracer-agent built from this tree)\n{}",
            paths.agent.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run {}: {e}", paths.agent.display())),
    }
}

/// The Replay button of `serve` against the real `timetracer-agent replay-server`: a request
/// of the FastAPI app recorded, then replayed from the page with its upstream mocked, must
/// come back `same` (the recorded app, unchanged and in its recorded environment, answers
/// what it answered; `replay.rs` checks the same fixture from the CLI).
#[test]
fn replay_button_returns_a_real_verdict() {
    use super::scenario::{App, Harness, Req};
    let _ = require_browser!();
    let paths = crate::require_root!();
    crate::require!(replay_server_missing(&paths));
    // Record a real request of the sample FastAPI app.
    let mut h = Harness::new(paths.clone(), "ui_replay");
    h.start_record(App::FastApi);
    let sent = h.send_fresh(&Req::new("users/42", "ui-replay"));
    assert_eq!(sent.resp.status, 200, "the app must answer while recorded");
    let st = h.stop_agent();
    // SIGINT: the agent forwards it to uvicorn, which exits 0; the agent exits with its code.
    assert!(st.success(), "agent after SIGINT: {st} (want exit 0)");
    let dir = h.out.clone();
    let files: Vec<PathBuf> = walk_json(&dir);
    assert_eq!(files.len(), 1, "one cassette expected in {}", dir.display());
    let rel = files[0]
        .strip_prefix(&dir)
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let tmp = util::temp_dir("ui-replay");
    let socket = tmp.path().join("replay.sock");
    // The service runs the recorded command in its own environment: give it the app's, as
    // `timetracer-agent replay` gets it in replay.rs. The upstream is stopped, so `same` means
    // the dependency call was answered from the cassette.
    h.stop_upstream();
    // The service runs only commands its operator allowed: this recording's own.
    let allowed = recorded_command_line(&files[0]);
    let mut cmd = util::command(
        &paths.agent,
        [
            "replay-server",
            "--socket",
            socket.to_str().unwrap(),
            "--allow-cmd",
            &allowed,
        ],
    );
    h.app_env(&mut cmd);
    let mut service =
        ProcGuard::spawn("replay-server", cmd, tmp.path()).expect("spawn replay-server");
    let t = Instant::now();
    while !socket.exists() {
        assert!(
            service.try_status().is_none(),
            "replay-server exited:\n{}",
            service.diagnostics()
        );
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no socket:\n{}",
            service.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let serve = start_serve(&paths, &dir, tmp.path(), &socket);
    let shots = screenshots_dir(&paths);
    let url = serve.url.clone();
    with_browser(tmp.path(), |c| async move {
        c.goto(&url).await.unwrap();
        assert_eq!(visible_rows(&c).await, 1);
        c.find(Locator::Css("td.ep button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_js(
            &c,
            "the detail",
            "return !!document.querySelector('#detail button[data-replay]')",
        )
        .await;
        c.find(Locator::Css("#detail button[data-replay]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let t = Instant::now();
        loop {
            if js(&c, "return !!document.querySelector('#detail .verdict')").await == json!(true) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(240),
                "no verdict for {rel}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let v = js(&c, "const v = document.querySelector('#detail .verdict'); return [v.className, v.innerText]").await;
        shot(&c, &shots, "serve-replay-verdict").await;
        let class = v[0].as_str().unwrap();
        let text = v[1].as_str().unwrap();
        assert_eq!(class, "verdict v-same", "want the verdict `same`:\n{text}");
        assert!(text.contains("Replay verdict: same"), "{text}");
        assert!(text.contains("GET /users/42?req=ui-replay: same"), "{text}");
        c
    });
    drop(serve.proc);
    drop(service);
}

/// The command line a cassette recorded (`session.cmdline`, without the agent's held-child
/// prefix), as shell words for `--allow-cmd`.
fn recorded_command_line(cassette: &Path) -> String {
    let c: Value = serde_json::from_slice(&std::fs::read(cassette).unwrap()).unwrap();
    let mut argv: Vec<String> = c["session"]["cmdline"]
        .as_array()
        .expect("session.cmdline")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    if argv.get(1).is_some_and(|a| a == "__exec-held") {
        argv.drain(..4);
    }
    argv.iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn walk_json(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                out.extend(walk_json(&p));
            } else if name.ends_with(".json") || name.ends_with(".json.zst") {
                out.push(p);
            }
        }
    }
    out
}

/// Presses and releases one key, as a user would (WebDriver actions, not a synthetic event).
async fn press(c: &Client, key: char) {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    c.perform_actions(keys).await.expect("key press");
}

/// Waits up to 15 s for a completed download named `name` in `dir` and returns its text.
fn downloaded(dir: &Path, name: &str) -> String {
    let t = Instant::now();
    loop {
        let p = dir.join(name);
        if let Ok(text) = std::fs::read_to_string(&p) {
            // Chromium writes `NAME.crdownload` and renames it when complete.
            if !text.is_empty() {
                return text;
            }
        }
        let names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{name} was not downloaded into {}: {names:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const BG: &str = "return getComputedStyle(document.body).backgroundColor";
const SELECTED: &str = "const t = document.querySelector('#tbody tr.row.selected'); return t ? Number(t.dataset.n) : null";
const VISIBLE_NS: &str = "return Array.from(document.querySelectorAll('#tbody tr.row')).filter(t => !t.hidden).map(t => Number(t.dataset.n))";

/// Issue #22, item 4: tags and notes kept beside the cassettes across reloads (and shown
/// read-only, inert, in the static dashboard), filters in the URL and in localStorage, the
/// dark theme, keyboard navigation, downloads from the detail view, and the dependency graph
/// per endpoint.
#[test]
fn serve_tags_notes_filters_theme_keys_downloads_and_graph() {
    let paths = require_browser!();
    let tmp = util::temp_dir("ui-issue22");
    let dir = fixture_dir(&paths, tmp.path());
    let socket = tmp.path().join("no-replay-service.sock");
    let serve = start_serve(&paths, &dir, tmp.path(), &socket);
    let port = serve.port;
    let shots = screenshots_dir(&paths);
    let url = serve.url.clone();
    let downloads = tmp.path().join("downloads");
    let note = r#"<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> 500 after deploy"#;
    let store = dir.join(".timetracer-notes.json");
    let html = tmp.path().join("dashboard.html");
    let (dir2, html2, store2, paths2) = (dir.clone(), html.clone(), store.clone(), paths.clone());
    with_browser(tmp.path(), |c| async move {
        c.goto(&url).await.unwrap();
        assert_eq!(visible_rows(&c).await, 6);

        // ---- the dependency graph per endpoint shows the recorded services ----
        let g = js(&c, "return document.querySelector('#graphs').textContent").await;
        let g = g.as_str().unwrap();
        for want in [
            "POST /orders/{id}/checkout",
            "PostgreSQL 127.0.0.1:5432",
            "MySQL 127.0.0.1:3306",
            "MongoDB 127.0.0.1:27017",
            "Redis 127.0.0.1:6379",
            "HTTPS pricing.internal",
            "HTTP inventory.internal",
            "2 calls in 1 of 1 requests · p50 0.90 ms · p95 3.10 ms",
        ] {
            assert!(g.contains(want), "graph lacks {want:?}:\n{g}");
        }
        let nodes = js(&c, "return Array.from(document.querySelectorAll('#graphs figure')).map(f => f.querySelectorAll('g.dep-node').length)").await;
        assert!(nodes.as_array().unwrap().contains(&json!(6)), "{nodes}");
        let box_ = js(&c, "const f = Array.from(document.querySelectorAll('#graphs figure')).find(f => f.querySelectorAll('g.dep-node').length === 6); const r = f.querySelector('svg').getBoundingClientRect(); return [r.width, r.height]").await;
        assert!(
            box_[0].as_f64().unwrap() > 300.0 && box_[1].as_f64().unwrap() > 100.0,
            "graph drawn: {box_}"
        );
        c.find(Locator::Id("graphs-section")).await.unwrap();
        js(
            &c,
            "document.querySelector('#graphs').scrollIntoView(); return true",
        )
        .await;
        shot(&c, &shots, "serve-dependency-graph").await;

        // ---- keyboard: j/k, Enter, Esc, / ----
        js(
            &c,
            "window.scrollTo(0, 0); document.activeElement.blur(); return true",
        )
        .await;
        let order = js(&c, VISIBLE_NS).await;
        let order: Vec<u64> = order
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        press(&c, 'j').await;
        assert_eq!(js(&c, SELECTED).await, json!(order[0]));
        press(&c, 'j').await;
        press(&c, 'j').await;
        assert_eq!(js(&c, SELECTED).await, json!(order[2]));
        press(&c, 'k').await;
        assert_eq!(js(&c, SELECTED).await, json!(order[1]));
        press(&c, Key::Enter.into()).await;
        wait_js(
            &c,
            "the detail opened by Enter",
            "return !!document.querySelector('#detail article.cassette')",
        )
        .await;
        let opened = js(
            &c,
            "return document.querySelector('#detail h2.target').textContent",
        )
        .await;
        let want = js(
            &c,
            &format!(
                "return document.querySelector('#tbody tr[data-n=\"{}\"] button.open').textContent",
                order[1]
            ),
        )
        .await;
        assert_eq!(opened, want);
        press(&c, Key::Escape.into()).await;
        wait_js(&c, "Esc closing the detail", "return !document.querySelector('.layout').classList.contains('has-detail') && !document.querySelector('#detail article')").await;
        press(&c, '/').await;
        assert_eq!(
            js(&c, "return document.activeElement.id").await,
            json!("f-q")
        );
        press(&c, 'j').await; // typed into the filter, not a move
        assert_eq!(
            js(&c, "return document.querySelector('#f-q').value").await,
            json!("j")
        );
        press(&c, Key::Escape.into()).await;
        assert_eq!(js(&c, "return document.activeElement.id").await, json!(""));
        c.find(Locator::Id("f-clear"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();

        // ---- tags and notes: saved beside the cassette, kept across reloads, inert ----
        c.find(Locator::XPath(
            "//td[@class='ep']/button[starts-with(., '/orders/17/checkout')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        wait_js(
            &c,
            "the notes form",
            "return !!document.querySelector('#detail section.annotate .a-tags')",
        )
        .await;
        c.find(Locator::Css("#detail .a-tags"))
            .await
            .unwrap()
            .send_keys("Flaky, ticket-7")
            .await
            .unwrap();
        c.find(Locator::Css("#detail .a-note"))
            .await
            .unwrap()
            .send_keys(note)
            .await
            .unwrap();
        c.find(Locator::Css("#detail button.save-note"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_js(
            &c,
            "the save",
            "return document.querySelector('#detail .a-status').textContent.startsWith('Saved')",
        )
        .await;
        wait_js(&c, "the tag in the row", "return Array.from(document.querySelectorAll('#tbody button.utag')).map(b => b.textContent).join(',') === 'flaky,ticket-7'").await;
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&store2).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the store is 0600");
        let on_disk: Value =
            serde_json::from_str(&std::fs::read_to_string(&store2).unwrap()).unwrap();
        assert_eq!(
            on_disk["cassettes"]["ui/POST__orders_17_checkout__7d1c9a52.json"]["note"],
            json!(note)
        );
        let cassette =
            std::fs::read_to_string(dir2.join("ui/POST__orders_17_checkout__7d1c9a52.json"))
                .unwrap();
        assert!(!cassette.contains("ticket-7"), "never inside the cassette");
        c.refresh().await.unwrap();
        wait_js(&c, "the tags after a reload", "return Array.from(document.querySelectorAll('#tbody button.utag')).map(b => b.textContent).join(',') === 'flaky,ticket-7'").await;
        c.find(Locator::XPath(
            "//td[@class='ep']/button[starts-with(., '/orders/17/checkout')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        wait_js(
            &c,
            "the notes form after a reload",
            "return !!document.querySelector('#detail .a-note')",
        )
        .await;
        assert_eq!(
            js(&c, "return document.querySelector('#detail .a-tags').value").await,
            json!("flaky, ticket-7")
        );
        assert_eq!(
            js(&c, "return document.querySelector('#detail .a-note').value").await,
            json!(note)
        );
        assert_inert(&c, 2, "serve with a hostile note").await;
        shot(&c, &shots, "serve-tags-notes").await;
        // The tag filter.
        c.find(Locator::Id("f-tag"))
            .await
            .unwrap()
            .send_keys("FLAKY")
            .await
            .unwrap();
        assert_eq!(visible_rows(&c).await, 1);
        c.find(Locator::Id("f-clear"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();

        // ---- downloads from the detail view: the cassette, a HAR, a curl script ----
        for (sel, name) in [
            ("a.dl-json", "POST__orders_17_checkout__7d1c9a52.json"),
            ("a.dl-har", "POST__orders_17_checkout__7d1c9a52.har"),
        ] {
            c.find(Locator::Css(&format!("#detail {sel}")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            let text = downloaded(&downloads, name);
            if sel == "a.dl-json" {
                assert_eq!(text, cassette, "the file as stored");
            } else {
                let har: Value = serde_json::from_str(&text).unwrap();
                let entries = har["log"]["entries"].as_array().unwrap();
                assert!(
                    entries.len() >= 3,
                    "the request and its HTTP calls: {}",
                    entries.len()
                );
                assert!(text.contains("pricing.internal"));
            }
        }
        // Chromium holds a downloaded shell script for the user's confirmation (a dangerous
        // file type): the link's answer is checked instead of the file.
        let curl = js(&c, "const a = document.querySelector('#detail a.dl-curl'); return fetch(a.href).then(async r => [r.status, r.headers.get('content-disposition'), await r.text(), a.hasAttribute('download')])").await;
        assert_eq!(curl[0], json!(200), "{curl}");
        assert_eq!(
            curl[1],
            json!("attachment; filename=\"POST__orders_17_checkout__7d1c9a52.sh\"")
        );
        let script = curl[2].as_str().unwrap();
        assert!(
            script.contains("curl ") && script.contains("/orders/17/checkout"),
            "{script}"
        );
        assert_eq!(curl[3], json!(true));

        // ---- filters in the URL (a shared link) and in localStorage ----
        js(&c, "window.scrollTo(0, 0); return true").await;
        let set = |sel: &'static str, v: &'static str| {
            let c = c.clone();
            async move {
                js(&c, &format!("const e = document.querySelector('{sel}'); e.value = {v:?}; e.dispatchEvent(new Event('change', {{bubbles: true}})); return true")).await;
            }
        };
        set("#f-q", "orders").await;
        c.find(Locator::Css("input.f-class[value='5xx']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        set("#f-dep", "postgres").await;
        c.find(Locator::Css("th[data-sort=d] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let shown = visible_rows(&c).await;
        assert!(shown >= 1, "the filters keep a row");
        let link = c.current_url().await.unwrap().to_string();
        assert!(
            link.contains("q=orders")
                && link.contains("status=5xx")
                && link.contains("dep=postgres")
                && link.contains("sort="),
            "{link}"
        );
        // Someone else opens the link: nothing in their storage, the link alone.
        js(&c, "localStorage.clear(); return true").await;
        c.goto("about:blank").await.unwrap();
        c.goto(&link).await.unwrap();
        assert_eq!(visible_rows(&c).await, shown);
        let f = js(&c, "return [document.querySelector('#f-q').value, document.querySelector('input.f-class[value=\"5xx\"]').checked, document.querySelector('#f-dep').value, document.querySelector('th[data-sort=d]').getAttribute('aria-sort')]").await;
        assert_eq!(f, json!(["orders", true, "postgres", "descending"]));
        // Back to the bare address: restored from localStorage, and the URL says so again.
        c.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
        assert_eq!(visible_rows(&c).await, shown);
        assert_eq!(c.current_url().await.unwrap().to_string(), link);
        c.find(Locator::Id("f-clear"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // Clearing the filters keeps the sort order (not a filter), and the address says so.
        assert_eq!(
            c.current_url().await.unwrap().to_string(),
            format!("http://127.0.0.1:{port}/?sort=-d")
        );

        // ---- dark theme: toggled, rendered, kept ----
        let light = js(&c, BG).await;
        let dark_pref = js(
            &c,
            "return matchMedia('(prefers-color-scheme: dark)').matches",
        )
        .await;
        c.find(Locator::Id("theme"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let after = js(&c, BG).await;
        assert_ne!(after, light, "the other theme renders another background");
        let want_dark = dark_pref != json!(true);
        assert_eq!(
            js(&c, "return document.documentElement.dataset.theme").await,
            json!(if want_dark { "dark" } else { "light" })
        );
        if want_dark {
            assert_eq!(after, json!("rgb(20, 22, 26)"));
        }
        shot(&c, &shots, "serve-dark").await;
        c.refresh().await.unwrap();
        assert_eq!(js(&c, BG).await, after, "kept across reloads");
        c.goto(&format!(
            "http://127.0.0.1:{port}/timeline?f=ui/POST__orders_17_checkout__7d1c9a52.json"
        ))
        .await
        .unwrap();
        assert_eq!(js(&c, BG).await, after, "and on the timeline page");

        // ---- the static dashboard: tags and note shown read-only, as text; downloads ----
        cli(
            &paths2,
            &[
                "dashboard",
                "--dir",
                dir2.to_str().unwrap(),
                "-o",
                html2.to_str().unwrap(),
            ],
        );
        c.goto(&format!("file://{}", html2.display()))
            .await
            .unwrap();
        assert_eq!(js(&c, "return Array.from(document.querySelectorAll('#tbody .utag')).map(b => b.textContent).join(',')").await, json!("flaky,ticket-7"));
        c.find(Locator::XPath(
            "//td[@class='ep']/button[starts-with(., '/orders/17/checkout')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        wait_js(
            &c,
            "the static detail",
            "return !!document.querySelector('#detail .user-note')",
        )
        .await;
        assert_eq!(
            js(
                &c,
                "return document.querySelector('#detail .user-note').textContent"
            )
            .await,
            json!(note)
        );
        assert_eq!(
            js(
                &c,
                "return document.querySelectorAll('#detail textarea, #detail .save-note').length"
            )
            .await,
            json!(0),
            "read-only"
        );
        assert_inert(&c, 2, "static dashboard with a hostile note").await;
        // The curl script's button saves the page's own copy (a shell script: see above).
        let curl = js(&c, "const b = document.querySelector('#detail button.dl-curl'); return [b.dataset.name, document.getElementById(b.dataset.save).textContent]").await;
        assert_eq!(curl[0], json!("POST__orders_17_checkout__7d1c9a52.sh"));
        let script = curl[1].as_str().unwrap();
        assert!(
            script.contains("curl ") && script.contains("/orders/17/checkout"),
            "{curl}"
        );
        std::fs::remove_file(downloads.join("POST__orders_17_checkout__7d1c9a52.json")).unwrap();
        c.find(Locator::Css("#detail button.dl-json"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let json_text = downloaded(&downloads, "POST__orders_17_checkout__7d1c9a52.json");
        let back: Value = serde_json::from_str(&json_text).unwrap();
        let orig: Value = serde_json::from_str(
            &std::fs::read_to_string(dir2.join("ui/POST__orders_17_checkout__7d1c9a52.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(back, orig, "the cassette's JSON");
        c
    });
    drop(serve.proc);
}
