//! The TUI model: every request row, the header counters and what the user is doing (selection,
//! filter, pause, overlays). No ratatui here: the views render from a `&State`, the key handler
//! turns keys into [`Action`]s, and [`State::apply`] is the only place that changes the UI state,
//! so everything is unit-tested without a terminal.
//!
//! Time is never read from a clock here: the loop passes "now" (time since the UI started) to
//! [`State::tick`], so tests are deterministic.
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cassette::Cassette;
use crate::cassette::format::{AttributionInfo, Event};
use crate::live::{LiveStats, LiveUpdate, Phase};

/// Rows kept in memory by default (older ones are dropped and counted).
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Rates are computed over the counter snapshots of about this long.
const RATE_WINDOW_MS: u64 = 2_000;
/// How long a status message stays in the footer.
const MESSAGE_TTL: Duration = Duration::from_secs(8);
/// Without a counter snapshot for this long the header says the feed is stalled.
const STALE_AFTER: Duration = Duration::from_secs(3);

/// What kind of dependency an event is, from its `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepKind {
    /// `http.client` (and any `http*` type).
    Http,
    /// `db.query` (PostgreSQL, MySQL, MongoDB) and any `db*` type.
    Db,
    /// `redis`.
    Redis,
    /// Anything else a future version adds.
    Other,
}

impl DepKind {
    /// Classifies an event `type`.
    #[must_use]
    pub fn of(kind: &str) -> Self {
        if kind == "redis" {
            Self::Redis
        } else if kind.starts_with("db") {
            Self::Db
        } else if kind.starts_with("http") {
            Self::Http
        } else {
            Self::Other
        }
    }

    /// Short label for the waterfall.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Db => "db",
            Self::Redis => "redis",
            Self::Other => "other",
        }
    }
}

/// Dependency calls of one request by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DepCounts {
    pub http: u32,
    pub db: u32,
    pub redis: u32,
    pub other: u32,
}

impl DepCounts {
    fn of(events: &[Event]) -> Self {
        let mut c = Self::default();
        for e in events {
            match DepKind::of(&e.kind) {
                DepKind::Http => c.http += 1,
                DepKind::Db => c.db += 1,
                DepKind::Redis => c.redis += 1,
                DepKind::Other => c.other += 1,
            }
        }
        c
    }
}

/// One recorded request in the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Arrival number in this UI, from 1; stable identity for selection.
    pub seq: u64,
    /// `HH:MM:SS.mmm` (UTC) from `session.recorded_at`.
    pub time: String,
    pub deps: DepCounts,
    /// Events whose attribution is ambiguous.
    pub ambiguous: u32,
    /// Where the cassette is on disk (written by the agent, or saved from the UI).
    pub saved: Option<PathBuf>,
    /// Still open to late calls (a provisional snapshot); its final version replaces it.
    pub open: bool,
    pub cassette: Box<Cassette>,
}

impl Row {
    /// Builds a row; the bodies of an already-saved cassette are dropped to save memory (the
    /// UI never shows them and the file has them).
    #[must_use]
    pub fn new(seq: u64, mut cassette: Box<Cassette>, saved: Option<PathBuf>) -> Self {
        if saved.is_some() {
            strip_bodies(&mut cassette);
        }
        let ambiguous = cassette
            .events
            .iter()
            .filter(|e| matches!(e.attribution, Some(AttributionInfo::Ambiguous { .. })))
            .count();
        Self {
            seq,
            time: clock_time(&cassette.session.recorded_at),
            deps: DepCounts::of(&cassette.events),
            ambiguous: u32::try_from(ambiguous).unwrap_or(u32::MAX),
            saved,
            open: false,
            cassette,
        }
    }

    #[must_use]
    pub fn method(&self) -> &str {
        &self.cassette.request.method
    }

    #[must_use]
    pub fn path(&self) -> &str {
        &self.cassette.request.path
    }

    /// HTTP status, 0 when there was no response.
    #[must_use]
    pub fn status(&self) -> i64 {
        self.cassette.response.status
    }

    #[must_use]
    pub fn duration_ms(&self) -> f64 {
        self.cassette.response.duration_ms
    }

    #[must_use]
    pub fn traceback(&self) -> Option<&str> {
        self.cassette
            .error
            .as_ref()
            .and_then(|e| e.traceback.as_deref())
    }

    /// Status >= 400, no response, or an error recorded (a traceback among them): what every
    /// viewer calls a failure ([`crate::analysis::summary::is_failure`]).
    #[must_use]
    pub fn is_error(&self) -> bool {
        crate::analysis::summary::is_failure(&self.cassette)
    }
}

fn strip_bodies(c: &mut Cassette) {
    c.request.body = None;
    c.response.body = None;
    for e in &mut c.events {
        if let Some(r) = &mut e.request {
            r.body = None;
        }
        e.result.body = None;
    }
}

/// `2026-11-22T23:28:08.792058+00:00` → `23:28:08.792`.
fn clock_time(rfc3339: &str) -> String {
    match rfc3339.split_once('T') {
        Some((_, rest)) => rest.chars().take(12).collect(),
        None => rfc3339.chars().take(12).collect(),
    }
}

/// A status condition of the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPred {
    /// `5xx`: the hundreds digit.
    Class(i64),
    Eq(i64),
    Ge(i64),
    Gt(i64),
    Le(i64),
    Lt(i64),
}

impl StatusPred {
    fn parse(v: &str) -> Result<Self, String> {
        let num = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| format!("status:{v} — expected e.g. 404, 5xx, >=400"))
        };
        let lower = v.to_ascii_lowercase();
        if let Some(d) = lower.strip_suffix("xx")
            && d.len() == 1
        {
            return num(d).map(Self::Class);
        }
        if let Some(n) = v.strip_prefix(">=") {
            num(n).map(Self::Ge)
        } else if let Some(n) = v.strip_prefix("<=") {
            num(n).map(Self::Le)
        } else if let Some(n) = v.strip_prefix('>') {
            num(n).map(Self::Gt)
        } else if let Some(n) = v.strip_prefix('<') {
            num(n).map(Self::Lt)
        } else {
            num(v.strip_prefix('=').unwrap_or(v)).map(Self::Eq)
        }
    }

    #[must_use]
    pub fn matches(self, status: i64) -> bool {
        match self {
            Self::Class(c) => status / 100 == c,
            Self::Eq(n) => status == n,
            Self::Ge(n) => status >= n,
            Self::Gt(n) => status > n,
            Self::Le(n) => status <= n,
            Self::Lt(n) => status < n,
        }
    }
}

/// The parsed `/` filter. All conditions must hold.
///
/// Syntax (space-separated): free words are path substrings (case-insensitive; `path:WORD`
/// too); `method:GET` (or `method:GET,POST`); `status:404`, `status:5xx`, `status:>=400`
/// (`>`, `<`, `<=` too); `min:100ms`, `min:1.5s`, `min:250` (milliseconds).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Lower-cased path substrings.
    pub words: Vec<String>,
    /// Upper-cased methods; any of them.
    pub methods: Vec<String>,
    pub status: Vec<StatusPred>,
    pub min_ms: Option<f64>,
}

impl Filter {
    /// Parses the prompt text; the error says which term is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut f = Self::default();
        for term in text.split_whitespace() {
            match term.split_once(':') {
                Some(("method" | "m", v)) => {
                    if v.is_empty() {
                        return Err("method: — needs a value, e.g. method:GET".into());
                    }
                    f.methods.extend(
                        v.split(',')
                            .filter(|m| !m.is_empty())
                            .map(str::to_ascii_uppercase),
                    );
                }
                Some(("status" | "s", v)) => f.status.push(StatusPred::parse(v)?),
                Some(("min", v)) => f.min_ms = Some(parse_ms(v)?),
                Some(("path", v)) if !v.is_empty() => f.words.push(v.to_lowercase()),
                _ => f.words.push(term.to_lowercase()),
            }
        }
        Ok(f)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
            && self.methods.is_empty()
            && self.status.is_empty()
            && self.min_ms.is_none()
    }

    #[must_use]
    pub fn matches(&self, row: &Row) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == row.method()) {
            return false;
        }
        if !self.status.iter().all(|p| p.matches(row.status())) {
            return false;
        }
        if self.min_ms.is_some_and(|min| row.duration_ms() < min) {
            return false;
        }
        if !self.words.is_empty() {
            let path = row.path().to_lowercase();
            if !self.words.iter().all(|w| path.contains(w.as_str())) {
                return false;
            }
        }
        true
    }
}

/// `100ms`, `1s`, `1.5s`, `250` (ms) → milliseconds.
fn parse_ms(v: &str) -> Result<f64, String> {
    let bad = || format!("min:{v} — expected a duration such as 100ms or 1.5s");
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok(n * scale)
}

/// Per-second rates computed from successive [`LiveStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub requests: f64,
    pub events: f64,
    pub bytes: f64,
}

/// One counter snapshot kept for the rate window.
#[derive(Clone, Copy, Debug)]
struct Sample {
    uptime_ms: u64,
    requests: u64,
    events: u64,
    bytes: u64,
}

/// What the user does; produced by [`crate::tui::input`] from keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    /// First row.
    Top,
    /// Last row, and follow new rows.
    Bottom,
    /// Enter: show / hide the detail pane.
    ToggleDetail,
    /// Scroll the detail pane by lines (negative = up).
    ScrollDetail(i16),
    /// `/`: open the filter prompt.
    OpenFilter,
    PromptChar(char),
    PromptBackspace,
    /// Ctrl-U in the prompt.
    PromptClear,
    /// Enter in the prompt: keep the filter.
    PromptSubmit,
    /// Esc in the prompt: back to the filter there was before.
    PromptCancel,
    /// Esc: close help, else clear the filter, else close details.
    Escape,
    TogglePause,
    Save,
    ToggleErrorsOnly,
    ToggleHelp,
    Quit,
}

/// What the loop must do after an action (the model does no I/O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    /// Write the cassette of this row ([`State::cassette`]) and report with
    /// [`State::saved`] / [`State::save_failed`].
    Save(u64),
}

/// Which key map applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputMode {
    Normal,
    /// Typing a filter.
    Prompt,
    /// The help overlay is open.
    Help,
}

/// The filter prompt being edited.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub text: String,
    /// Why `text` does not parse (the previous valid filter stays applied).
    pub error: Option<String>,
    before_text: String,
    before: Filter,
}

/// A footer message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub text: String,
    pub is_error: bool,
    at: Duration,
}

/// Everything the views show.
#[derive(Debug)]
pub struct State {
    capacity: usize,
    rows: VecDeque<Row>,
    /// Arrived while paused, appended on resume.
    pending: VecDeque<Row>,
    next_seq: u64,
    /// Rows dropped to stay within `capacity`.
    evicted: u64,
    /// Cassette id → `seq` of the rows still open to late calls (updated in place).
    open: HashMap<String, u64>,
    paused: bool,
    arrived_while_paused: u64,
    /// Selected row (by `seq`); when it is gone the next one is selected.
    selected: Option<u64>,
    /// Selection tracks the newest visible row.
    follow: bool,
    detail: bool,
    detail_scroll: u16,
    errors_only: bool,
    filter: Filter,
    filter_text: String,
    prompt: Option<Prompt>,
    help: bool,
    message: Option<Message>,
    page: usize,
    stats: Option<LiveStats>,
    samples: VecDeque<Sample>,
    rates: Rates,
    last_stats_at: Option<Duration>,
    now: Duration,
    disconnected: bool,
    out_dir: PathBuf,
    save_enabled: bool,
    saved_here: u64,
}

impl State {
    /// An empty model. `save_enabled` is whether the agent writes cassettes itself (false with
    /// `--no-save`); `s` saves any row not saved yet into `out_dir` either way.
    #[must_use]
    pub fn new(out_dir: PathBuf, save_enabled: bool, capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            rows: VecDeque::new(),
            pending: VecDeque::new(),
            next_seq: 1,
            evicted: 0,
            open: HashMap::new(),
            paused: false,
            arrived_while_paused: 0,
            selected: None,
            follow: true,
            detail: false,
            detail_scroll: 0,
            errors_only: false,
            filter: Filter::default(),
            filter_text: String::new(),
            prompt: None,
            help: false,
            message: None,
            page: 10,
            stats: None,
            samples: VecDeque::new(),
            rates: Rates::default(),
            last_stats_at: None,
            now: Duration::ZERO,
            disconnected: false,
            out_dir,
            save_enabled,
            saved_here: 0,
        }
    }

    // ----- feed -------------------------------------------------------------------------

    /// Takes one update from the session.
    pub fn apply_update(&mut self, update: LiveUpdate) {
        match update {
            LiveUpdate::Request {
                cassette,
                path,
                phase,
            } => self.push_request(cassette, path, phase),
            LiveUpdate::Stats(s) => self.apply_stats(s),
        }
    }

    /// A new row, or a new version of a row still open (same cassette id): replaced in place,
    /// keeping its position, selection and saved mark.
    fn push_request(&mut self, cassette: Box<Cassette>, path: Option<PathBuf>, phase: Phase) {
        let id = cassette.session.id.clone();
        let open = phase == Phase::Open;
        let known = if open {
            self.open.get(&id).copied()
        } else {
            self.open.remove(&id)
        };
        if let Some(seq) = known
            && let Some(row) = self.row_or_pending_mut(seq)
        {
            let saved = path.or_else(|| row.saved.take());
            *row = Row::new(seq, cassette, saved);
            row.open = open;
            return;
        }
        let seq = self.next_seq;
        let mut row = Row::new(seq, cassette, path);
        row.open = open;
        if open {
            self.open.insert(id, seq);
        }
        self.next_seq += 1;
        if self.paused {
            self.arrived_while_paused += 1;
            self.pending.push_back(row);
        } else {
            self.rows.push_back(row);
        }
        while self.rows.len() + self.pending.len() > self.capacity {
            let gone = match self.rows.pop_front() {
                Some(r) => Some(r),
                None => self.pending.pop_front(),
            };
            if let Some(r) = gone
                && r.open
            {
                self.open.remove(&r.cassette.session.id);
            }
            self.evicted += 1;
        }
    }

    fn row_or_pending_mut(&mut self, seq: u64) -> Option<&mut Row> {
        let i = self.rows.partition_point(|r| r.seq < seq);
        if self.rows.get(i).is_some_and(|r| r.seq == seq) {
            return self.rows.get_mut(i);
        }
        let i = self.pending.partition_point(|r| r.seq < seq);
        self.pending.get_mut(i).filter(|r| r.seq == seq)
    }

    /// Rows still open to late calls (their final version has not come yet).
    #[must_use]
    pub fn open_rows(&self) -> usize {
        self.open.len()
    }

    fn apply_stats(&mut self, s: LiveStats) {
        let sample = Sample {
            uptime_ms: s.uptime_ms,
            requests: s.requests,
            events: s.events,
            bytes: s.bytes,
        };
        if self
            .samples
            .back()
            .is_some_and(|b| b.uptime_ms > sample.uptime_ms || b.requests > sample.requests)
        {
            // A new session (counters went back): start over.
            self.samples.clear();
        }
        self.samples.push_back(sample);
        while self.samples.len() > 2
            && self.samples[1].uptime_ms + RATE_WINDOW_MS <= sample.uptime_ms
        {
            self.samples.pop_front();
        }
        if let (Some(a), Some(b)) = (self.samples.front(), self.samples.back())
            && b.uptime_ms > a.uptime_ms
        {
            let dt = (b.uptime_ms - a.uptime_ms) as f64 / 1000.0;
            let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
            self.rates = Rates {
                requests: per_s(a.requests, b.requests),
                events: per_s(a.events, b.events),
                bytes: per_s(a.bytes, b.bytes),
            };
        }
        self.stats = Some(s);
        self.last_stats_at = Some(self.now);
    }

    /// The sender went away (the session ended); rows stay browsable.
    pub fn set_disconnected(&mut self) {
        self.disconnected = true;
    }

    /// Advances the model's clock (time since the UI started) and expires the footer message.
    pub fn tick(&mut self, now: Duration) {
        self.now = now;
        if self
            .message
            .as_ref()
            .is_some_and(|m| now.saturating_sub(m.at) >= MESSAGE_TTL)
        {
            self.message = None;
        }
    }

    /// Rows moved by PageUp / PageDown (the table's height, set by the loop).
    pub fn set_page_size(&mut self, rows: usize) {
        self.page = rows.max(1);
    }

    // ----- user actions -----------------------------------------------------------------

    /// Which key map applies now.
    #[must_use]
    pub fn input_mode(&self) -> InputMode {
        if self.prompt.is_some() {
            InputMode::Prompt
        } else if self.help {
            InputMode::Help
        } else {
            InputMode::Normal
        }
    }

    /// Applies a user action; the returned effect is the loop's to carry out.
    pub fn apply(&mut self, action: Action) -> Effect {
        match action {
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::PageUp => self.move_by(-isize::try_from(self.page).unwrap_or(isize::MAX)),
            Action::PageDown => self.move_by(isize::try_from(self.page).unwrap_or(isize::MAX)),
            Action::Top => {
                let vis = self.visible();
                if let Some(&i) = vis.first() {
                    self.select_seq(self.rows[i].seq);
                }
            }
            Action::Bottom => {
                self.follow = true;
                self.selected = None;
                self.detail_scroll = 0;
            }
            Action::ToggleDetail => {
                self.detail = !self.detail;
                self.detail_scroll = 0;
                if self.detail {
                    // Details of a moving target are unreadable: stop following.
                    self.pin();
                }
            }
            Action::ScrollDetail(d) => {
                if self.detail {
                    self.detail_scroll = self.detail_scroll.saturating_add_signed(d);
                }
            }
            Action::OpenFilter => {
                self.help = false;
                self.prompt = Some(Prompt {
                    text: self.filter_text.clone(),
                    error: None,
                    before_text: self.filter_text.clone(),
                    before: self.filter.clone(),
                });
            }
            Action::PromptChar(c) => self.edit_prompt(|t| t.push(c)),
            Action::PromptBackspace => self.edit_prompt(|t| {
                t.pop();
            }),
            Action::PromptClear => self.edit_prompt(String::clear),
            Action::PromptSubmit => {
                if let Some(p) = self.prompt.take() {
                    if let Some(e) = p.error {
                        self.prompt = Some(Prompt {
                            error: Some(e),
                            ..p
                        });
                    } else {
                        self.filter_text = p.text.trim().to_owned();
                    }
                }
            }
            Action::PromptCancel => {
                if let Some(p) = self.prompt.take() {
                    self.filter = p.before;
                    self.filter_text = p.before_text;
                }
            }
            Action::Escape => {
                if self.help {
                    self.help = false;
                } else if !self.filter.is_empty() || self.errors_only {
                    self.filter = Filter::default();
                    self.filter_text.clear();
                    self.errors_only = false;
                    self.notify("filter cleared", false);
                } else if self.detail {
                    self.detail = false;
                }
            }
            Action::TogglePause => {
                if self.paused {
                    self.paused = false;
                    self.rows.extend(self.pending.drain(..));
                    self.arrived_while_paused = 0;
                } else {
                    self.paused = true;
                }
            }
            Action::Save => return self.request_save(),
            Action::ToggleErrorsOnly => self.errors_only = !self.errors_only,
            Action::ToggleHelp => self.help = !self.help,
            Action::Quit => return Effect::Quit,
        }
        Effect::None
    }

    fn edit_prompt(&mut self, f: impl FnOnce(&mut String)) {
        let Some(p) = &mut self.prompt else { return };
        f(&mut p.text);
        // Filter as you type; an incomplete term keeps the last valid filter.
        match Filter::parse(&p.text) {
            Ok(filter) => {
                p.error = None;
                self.filter = filter;
                self.filter_text = p.text.trim().to_owned();
            }
            Err(e) => p.error = Some(e),
        }
    }

    fn move_by(&mut self, delta: isize) {
        let vis = self.visible();
        let Some(pos) = self.selected_pos(&vis) else {
            return;
        };
        let last = vis.len() - 1;
        let to = pos.saturating_add_signed(delta).min(last);
        self.select_seq(self.rows[vis[to]].seq);
    }

    fn select_seq(&mut self, seq: u64) {
        if self.selected != Some(seq) || self.follow {
            self.detail_scroll = 0;
        }
        self.selected = Some(seq);
        self.follow = false;
    }

    /// Keeps the selection on the row it is on now (leaves follow mode).
    fn pin(&mut self) {
        if let Some(seq) = self.selected_row().map(|r| r.seq) {
            self.selected = Some(seq);
            self.follow = false;
        }
    }

    fn request_save(&mut self) -> Effect {
        self.pin();
        let Some(row) = self.selected_row() else {
            self.notify("nothing selected", true);
            return Effect::None;
        };
        if let Some(p) = &row.saved {
            let text = format!("already saved: {}", p.display());
            self.notify(&text, false);
            return Effect::None;
        }
        if row.open {
            let text = "still open to late calls: save it once it is final (the mark goes)";
            self.notify(text, true);
            return Effect::None;
        }
        Effect::Save(row.seq)
    }

    /// The row `seq` was written to `path`.
    pub fn saved(&mut self, seq: u64, path: PathBuf) {
        self.notify(&format!("saved {}", path.display()), false);
        if let Some(row) = self.row_mut(seq) {
            row.saved = Some(path);
        }
        self.saved_here += 1;
    }

    /// Writing the row `seq` failed.
    pub fn save_failed(&mut self, seq: u64, error: &str) {
        self.notify(&format!("save of request #{seq} failed: {error}"), true);
    }

    fn notify(&mut self, text: &str, is_error: bool) {
        self.message = Some(Message {
            text: text.to_owned(),
            is_error,
            at: self.now,
        });
    }

    fn row_mut(&mut self, seq: u64) -> Option<&mut Row> {
        let i = self.rows.partition_point(|r| r.seq < seq);
        self.rows.get_mut(i).filter(|r| r.seq == seq)
    }

    // ----- queries for the views --------------------------------------------------------

    /// Indices into [`Self::rows`] of the rows the filter and errors-only let through, oldest
    /// first.
    #[must_use]
    pub fn visible(&self) -> Vec<usize> {
        (0..self.rows.len())
            .filter(|&i| {
                let r = &self.rows[i];
                (!self.errors_only || r.is_error()) && self.filter.matches(r)
            })
            .collect()
    }

    /// Position in `visible` of the selected row.
    #[must_use]
    pub fn selected_pos(&self, visible: &[usize]) -> Option<usize> {
        let last = visible.len().checked_sub(1)?;
        match self.selected {
            Some(seq) if !self.follow => Some(
                visible
                    .partition_point(|&i| self.rows[i].seq < seq)
                    .min(last),
            ),
            _ => Some(last),
        }
    }

    /// The selected row, if any row is visible.
    #[must_use]
    pub fn selected_row(&self) -> Option<&Row> {
        let vis = self.visible();
        self.selected_pos(&vis).map(|p| &self.rows[vis[p]])
    }

    /// The cassette of row `seq` (for the save effect).
    #[must_use]
    pub fn cassette(&self, seq: u64) -> Option<&Cassette> {
        let i = self.rows.partition_point(|r| r.seq < seq);
        self.rows
            .get(i)
            .filter(|r| r.seq == seq)
            .map(|r| &*r.cassette)
    }

    /// All rows shown when nothing is filtered, oldest first.
    #[must_use]
    pub fn rows(&self) -> &VecDeque<Row> {
        &self.rows
    }

    /// Rows dropped to stay within the capacity.
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Requests that arrived since `p` paused the table.
    #[must_use]
    pub fn arrived_while_paused(&self) -> u64 {
        self.arrived_while_paused
    }

    #[must_use]
    pub fn is_following(&self) -> bool {
        self.follow
    }

    #[must_use]
    pub fn detail_open(&self) -> bool {
        self.detail
    }

    #[must_use]
    pub fn detail_scroll(&self) -> u16 {
        self.detail_scroll
    }

    #[must_use]
    pub fn errors_only(&self) -> bool {
        self.errors_only
    }

    #[must_use]
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The filter as typed.
    #[must_use]
    pub fn filter_text(&self) -> &str {
        &self.filter_text
    }

    #[must_use]
    pub fn prompt(&self) -> Option<&Prompt> {
        self.prompt.as_ref()
    }

    #[must_use]
    pub fn help_open(&self) -> bool {
        self.help
    }

    #[must_use]
    pub fn message(&self) -> Option<&Message> {
        self.message.as_ref()
    }

    /// The last counter snapshot.
    #[must_use]
    pub fn stats(&self) -> Option<&LiveStats> {
        self.stats.as_ref()
    }

    #[must_use]
    pub fn rates(&self) -> Rates {
        self.rates
    }

    /// How long since the last counter snapshot, when that is long enough to mention.
    #[must_use]
    pub fn stalled_for(&self) -> Option<Duration> {
        let at = self.last_stats_at?;
        let d = self.now.saturating_sub(at);
        (d >= STALE_AFTER && !self.disconnected).then_some(d)
    }

    /// The session ended (the feed's sender is gone).
    #[must_use]
    pub fn is_disconnected(&self) -> bool {
        self.disconnected
    }

    #[must_use]
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    #[must_use]
    pub fn save_enabled(&self) -> bool {
        self.save_enabled
    }

    /// Cassettes saved with `s` in this UI.
    #[must_use]
    pub fn saved_here(&self) -> u64 {
        self.saved_here
    }
}
