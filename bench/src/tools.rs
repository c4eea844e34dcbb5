//! Tools: bytes on disk per request (agent vs the Python tool, on the same requests), then
//! `timetracer search` over a generated corpus of cassettes with and without the index.
use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Plan, check_interrupted,
    load::Client,
    rig::{Agent, AppKind, Endpoint, Rig, Scheme},
    stats::Spread,
    sys::{DirUsage, empty_dir, round},
};

/// Requests per endpoint of the storage sample.
const SAMPLE: usize = 200;

/// Sends `n` GETs of `path` one after another on one keep-alive connection.
fn sequential(port: u16, path: &str, n: usize) -> Result<()> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut c = Client::connect(port)?;
    for _ in 0..n {
        c.get(req.as_bytes())?;
    }
    Ok(())
}

fn usage_json(u: DirUsage, requests: usize) -> Value {
    let mut v = u.to_json();
    let per = |b: u64| round(b as f64 / requests.max(1) as f64, 0);
    v["requests"] = json!(requests);
    v["bytes_per_request"] = json!(per(u.bytes));
    v["disk_bytes_per_request"] = json!(per(u.disk_bytes));
    v["index_bytes_per_request"] = json!(per(u.index_bytes));
    v
}

/// Records `SAMPLE` requests per endpoint with each tool; returns the results and the agent's
/// cassettes (one per endpoint) as templates.
fn storage(rig: &mut Rig) -> Result<(Value, Vec<String>)> {
    let eps = [Endpoint::Plain, Endpoint::Dep];
    let app = rig.app(Scheme::Http, AppKind::Plain)?;
    let out = rig.env.work.join("tools-agent-cassettes");
    let agent = Agent::attach(&rig.env, "agent-tools-sample", app.pid, &out, &[])?;
    for ep in eps {
        sequential(app.port, ep.path(), SAMPLE)?;
    }
    std::thread::sleep(Duration::from_millis(500));
    agent.stop()?;
    let mut templates = Vec::new();
    let mut rows = Vec::new();
    for ep in eps {
        let prefix = format!("GET__{}__", ep.path().trim_start_matches('/'));
        rows.push(json!({
            "endpoint": ep.path(),
            "tool": "timetracer-agent",
            "usage": usage_json(DirUsage::of(&out, &prefix), SAMPLE),
        }));
        if let Some(t) = first_file(&out, &prefix) {
            templates.push(fs::read_to_string(t)?);
        }
    }
    let total = DirUsage::of(&out, "");
    super::sys::retire(&out);
    let py = rig.app(Scheme::Http, AppKind::PythonTool)?;
    let dir = py.py_dir.clone().context("python tool dir")?;
    empty_dir(&dir);
    for ep in eps {
        sequential(py.port, ep.path(), SAMPLE)?;
    }
    for ep in eps {
        let prefix = format!("GET__{}__", ep.path().trim_start_matches('/'));
        rows.push(json!({
            "endpoint": ep.path(),
            "tool": "python-timetracer",
            "usage": usage_json(DirUsage::of(&dir, &prefix), SAMPLE),
        }));
    }
    empty_dir(&dir);
    Ok((
        json!({"rows": rows, "agent_index": usage_json(total, 2 * SAMPLE)}),
        templates,
    ))
}

fn first_file(dir: &Path, prefix: &str) -> Option<std::path::PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = first_file(&p, prefix) {
                return Some(f);
            }
        } else if e.file_name().to_string_lossy().starts_with(prefix) {
            return Some(p);
        }
    }
    None
}

/// Placeholders put into a template cassette (unique strings / a unique number).
const P_ID: &str = "@@SESSION-ID@@";
const P_TS: &str = "@@RECORDED-AT@@";
const P_PATH: &str = "@@REQUEST-PATH@@";
const P_STATUS: &str = "987654321";

/// A template cassette with placeholders for the fields the corpus varies.
fn placeholder_template(text: &str) -> Result<String> {
    let mut v: Value = serde_json::from_str(text).context("template cassette")?;
    v["session"]["id"] = json!(P_ID);
    v["session"]["recorded_at"] = json!(P_TS);
    v["request"]["path"] = json!(P_PATH);
    if v["request"].get("target").is_some() {
        v["request"]["target"] = json!(P_PATH);
    }
    v["response"]["status"] = json!(987_654_321);
    let mut s = serde_json::to_string_pretty(&v)?;
    s.push('\n');
    Ok(s)
}

/// Writes `n` cassettes under `dir`: paths `/users/N` and `/orders/N`, 1 % with status 500,
/// spread over 10 days. Returns how many have status 500.
fn generate(dir: &Path, templates: &[String], n: usize) -> Result<usize> {
    let templates: Vec<String> = templates
        .iter()
        .map(|t| placeholder_template(t))
        .collect::<Result<_>>()?;
    if templates.is_empty() {
        bail!("no template cassette was recorded");
    }
    let today = time::OffsetDateTime::now_utc().date();
    let days: Vec<String> = (0..10)
        .map(|d| (today - time::Duration::days(d)).to_string())
        .collect();
    for d in &days {
        fs::create_dir_all(dir.join(d))?;
    }
    let mut errors = 0;
    for i in 0..n {
        let day = &days[i % days.len()];
        let (kind, status) = (
            if i % 2 == 0 { "users" } else { "orders" },
            if i % 100 == 0 { 500 } else { 200 },
        );
        errors += usize::from(status == 500);
        let id = format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32,
            i % 0xffff,
            i
        );
        let secs = i % 86_400;
        let ts = format!(
            "{day}T{:02}:{:02}:{:02}.{:06}+00:00",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            i % 1_000_000
        );
        let text = templates[i % templates.len()]
            .replace(P_ID, &id)
            .replace(P_TS, &ts)
            .replace(P_PATH, &format!("/{kind}/{i}"))
            .replace(P_STATUS, &status.to_string());
        fs::write(
            dir.join(day)
                .join(format!("GET__{kind}_{i}__{}.json", &id[..8])),
            text,
        )?;
    }
    Ok(errors)
}

/// Runs `timetracer ARGS`; returns wall time and the number of stdout lines.
fn cli(rig: &Rig, args: &[&str]) -> Result<(f64, usize)> {
    let t = Instant::now();
    let out = Command::new(&rig.env.cli)
        .args(args)
        .env_remove("TIMETRACER_DIR")
        .output()
        .context("running timetracer")?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "timetracer {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((
        secs,
        out.stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
    ))
}

/// Deleting 100,000 files can take minutes: the corpus is moved aside and removed by a
/// detached, low-priority `rm -rf` that outlives the benchmark.
fn remove_in_background(dir: &Path) {
    use std::os::unix::process::CommandExt as _;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let trash = std::env::temp_dir().join(format!(
        "timetracer-bench-trash-{}-{stamp}",
        std::process::id()
    ));
    if fs::rename(dir, &trash).is_err() {
        let _ = fs::remove_dir_all(dir);
        return;
    }
    let spawned = Command::new("nice")
        .args(["-n", "19", "ionice", "-c", "3", "rm", "-rf"])
        .arg(&trash)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    if spawned.is_err() {
        let _ = fs::remove_dir_all(&trash);
    }
}

fn remove_index(dir: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(dir.join(format!(".timetracer-index.sqlite3{suffix}")));
    }
}

pub(crate) fn run(rig: &mut Rig, plan: &Plan) -> Result<Value> {
    let t0 = Instant::now();
    let (storage, templates) = storage(rig)?;
    eprintln!(
        "bench: storage sample recorded in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    check_interrupted()?;
    let corpus = rig.env.work.join("search-corpus");
    let _ = fs::remove_dir_all(&corpus);
    let t = Instant::now();
    let expected = generate(&corpus, &templates, plan.cassettes)?;
    let gen_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "bench: generated {} cassettes in {gen_secs:.1}s",
        plan.cassettes
    );
    let d = corpus.to_string_lossy().into_owned();
    let q = [
        "search", "--dir", &d, "--status", "500", "-n", "0", "--json",
    ];
    let check = |what: &str, lines: usize| -> Result<()> {
        if lines != expected {
            bail!("{what}: {lines} results, expected {expected}");
        }
        Ok(())
    };
    // 1. No index: the search reads and parses every file (a full rescan), building the index.
    check_interrupted()?;
    remove_index(&corpus);
    let (rescan, n) = cli(rig, &q)?;
    check("full rescan", n)?;
    // 2. `timetracer index` with nothing new (walk + stat only).
    let (index_update, _) = cli(rig, &["index", "--dir", &d])?;
    // 3. The search users run: refresh (walk + stat) then query. 4. Index only.
    let mut warm = Vec::new();
    let mut no_refresh = Vec::new();
    for _ in 0..3 {
        check_interrupted()?;
        let (s, n) = cli(rig, &q)?;
        check("indexed search", n)?;
        warm.push(s);
        let mut qn = q.to_vec();
        qn.push("--no-refresh");
        let (s, n) = cli(rig, &qn)?;
        check("indexed search --no-refresh", n)?;
        no_refresh.push(s);
    }
    let (glob, _) = cli(
        rig,
        &["search", "--dir", &d, "--endpoint", "/users/1*", "-n", "20"],
    )?;
    let warm_s = Spread::of(&warm).map(|s| s.median);
    eprintln!(
        "bench: search over {} cassettes: full rescan {rescan:.2}s, indexed {:.3}s, --no-refresh {:.3}s",
        plan.cassettes,
        warm_s.unwrap_or(f64::NAN),
        Spread::of(&no_refresh).map_or(f64::NAN, |s| s.median),
    );
    let disk = DirUsage::of(&corpus, "");
    remove_in_background(&corpus);
    Ok(json!({
        "storage": storage,
        "search": {
            "cassettes": plan.cassettes,
            "matches": expected,
            "query": "search --status 500 -n 0 --json",
            "generate_secs": round(gen_secs, 2),
            "corpus_disk_bytes": disk.disk_bytes,
            "index_bytes": disk.index_bytes,
            "full_rescan_secs": round(rescan, 3),
            "index_update_secs": round(index_update, 3),
            "indexed_search_secs": super::stats::spread_json(&warm, 3),
            "indexed_search_no_refresh_secs": super::stats::spread_json(&no_refresh, 3),
            "glob_search_secs": round(glob, 3),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_from_a_fixture() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fixture = root.join("tests/fixtures/cassettes/ours/POST__login_caf__e92ca5c8.json");
        let text = fs::read_to_string(fixture).unwrap();
        let dir = std::env::temp_dir().join(format!("tt-bench-corpus-{}", std::process::id()));
        let errors = generate(&dir, &[text], 250).unwrap();
        assert_eq!(errors, 3);
        let u = DirUsage::of(&dir, "");
        assert_eq!(u.files, 250);
        let f = first_file(&dir, "GET__users_100__").unwrap();
        let v: Value = serde_json::from_str(&fs::read_to_string(f).unwrap()).unwrap();
        assert_eq!(v["response"]["status"], 500);
        assert_eq!(v["request"]["path"], "/users/100");
        let _ = fs::remove_dir_all(&dir);
    }
}
