//! Fixed requests and counters shared by the TUI tests.
#![allow(
    dead_code,
    reason = "each test crate uses a different part of the fixtures"
)]

use std::path::PathBuf;

use serde_json::json;
use timetracer::cassette::format::{
    AttributionInfo, Cassette, ErrorInfo, ErrorKind, Event, EventResult, Request, Response,
    Session, Signature,
};
use timetracer::live::{LiveStats, LiveUpdate, Phase};

/// A cassette recorded at `12:00:0S.mmm` with the given method, path, status and duration.
pub(crate) fn cassette(
    method: &str,
    path: &str,
    status: i64,
    duration_ms: f64,
    n: u32,
) -> Cassette {
    Cassette {
        startup: None,
        db_sessions: Vec::new(),
        schema_version: "2.0".into(),
        generator: None,
        session: Session {
            id: format!("{n:08x}-0000-4000-8000-000000000000"),
            recorded_at: format!("2026-11-22T12:00:{:02}.{:03}000+00:00", n % 60, n % 1000),
            service: "svc".into(),
            env: "test".into(),
            ..Session::default()
        },
        request: Request {
            method: method.into(),
            path: path.into(),
            client_ip: Some("10.0.0.1".into()),
            ..Request::default()
        },
        response: Response {
            status,
            duration_ms,
            ..Response::default()
        },
        error: None,
        events: Vec::new(),
        connection: None,
        timing: None,
        policies: Default::default(),
        stats: Default::default(),
    }
}

pub(crate) fn http_event(eid: u64, start: f64, dur: f64, url: &str, status: i64) -> Event {
    Event {
        eid,
        kind: "http.client".into(),
        start_offset_ms: start,
        duration_ms: dur,
        signature: Signature {
            lib: "httpx".into(),
            method: "GET".into(),
            url: Some(url.into()),
            ..Signature::default()
        },
        result: EventResult {
            status: Some(status),
            reason: Some("OK".into()),
            ..EventResult::default()
        },
        attribution: Some(AttributionInfo::Exact {
            evidence: "thread".into(),
            facts: None,
        }),
        ..Event::default()
    }
}

pub(crate) fn sql_event(eid: u64, start: f64, dur: f64, sql: &str) -> Event {
    Event {
        eid,
        kind: "db.query".into(),
        start_offset_ms: start,
        duration_ms: dur,
        signature: Signature {
            lib: "postgres".into(),
            method: sql.split_whitespace().next().unwrap_or("").into(),
            url: Some("postgres://db:5432/app".into()),
            ..Signature::default()
        },
        db: Some(json!({"sql": sql, "params": ["42"], "command_tag": "SELECT 1"})),
        attribution: Some(AttributionInfo::Exact {
            evidence: "thread".into(),
            facts: None,
        }),
        ..Event::default()
    }
}

pub(crate) fn redis_event(eid: u64, start: f64, dur: f64, command: &str, args: &[&str]) -> Event {
    Event {
        eid,
        kind: "redis".into(),
        start_offset_ms: start,
        duration_ms: dur,
        signature: Signature {
            lib: "redis".into(),
            method: command.into(),
            url: Some("redis://cache:6379".into()),
            ..Signature::default()
        },
        db: Some(json!({"command": command, "args": args})),
        attribution: Some(AttributionInfo::Ambiguous {
            reason: "concurrent-requests".into(),
        }),
        ..Event::default()
    }
}

/// The request the detail snapshot shows: three calls and a traceback.
pub(crate) fn failing_order() -> Cassette {
    let mut c = cassette("POST", "/orders/42/pay", 500, 120.0, 7);
    c.request.target = Some("/orders/42/pay?retry=1".into());
    c.response.reason = Some("Internal Server Error".into());
    c.events = vec![
        http_event(1, 2.0, 30.0, "https://auth.internal:8443/verify", 200),
        sql_event(
            2,
            35.0,
            40.0,
            "SELECT id, total\n  FROM orders\n WHERE id = $1",
        ),
        redis_event(3, 80.0, 5.0, "GET", &["order:42:lock"]),
    ];
    c.error = Some(ErrorInfo {
        status: 500,
        kind: ErrorKind::Exception,
        traceback: Some(
            "Traceback (most recent call last):\n  File \"app.py\", line 12, in pay\n    total / 0\nZeroDivisionError: division by zero"
                .into(),
        ),
    });
    c
}

pub(crate) fn request(c: Cassette, saved: Option<&str>) -> LiveUpdate {
    LiveUpdate::Request {
        cassette: Box::new(c),
        path: saved.map(PathBuf::from),
        phase: Phase::Final,
    }
}

pub(crate) fn stats(uptime_ms: u64, requests: u64, events: u64, bytes: u64) -> LiveStats {
    LiveStats {
        target: "pid 4242 (uvicorn app:app)".into(),
        uptime_ms,
        requests,
        events,
        bytes,
        cassettes: requests,
        drops: Vec::new(),
        skipped_updates: 0,
    }
}

/// A handful of varied requests, oldest first.
pub(crate) fn sample_requests() -> Vec<LiveUpdate> {
    let mut users = cassette("GET", "/users", 200, 12.5, 1);
    users.events = vec![sql_event(1, 1.0, 8.0, "SELECT * FROM users")];
    let mut health = cassette("GET", "/health", 200, 0.4, 2);
    health.events = Vec::new();
    let missing = cassette("GET", "/users/999", 404, 3.2, 3);
    let mut slow = cassette("GET", "/reports/monthly", 200, 1540.0, 4);
    slow.events = vec![
        http_event(1, 5.0, 700.0, "http://reports.internal/build", 200),
        http_event(2, 710.0, 800.0, "http://reports.internal/render", 200),
        redis_event(3, 1520.0, 2.0, "SET", &["report:monthly", "done"]),
    ];
    let mut created = cassette("POST", "/users", 201, 25.0, 5);
    created.events = vec![sql_event(
        1,
        2.0,
        10.0,
        "INSERT INTO users (name) VALUES ($1)",
    )];
    let mut noresp = cassette("GET", "/stream", 0, 30000.0, 6);
    noresp.events = Vec::new();
    vec![
        request(users, Some("/tmp/c/GET__users.json")),
        request(health, Some("/tmp/c/GET__health.json")),
        request(missing, None),
        request(slow, None),
        request(created, Some("/tmp/c/POST__users.json")),
        request(noresp, None),
        request(failing_order(), None),
    ]
}
