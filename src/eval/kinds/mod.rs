//! The registry: the only place that lists the suite kinds. A new kind is its own module here
//! and one line in each of `KindSettings`, `KINDS`, `parse` and `run` below.

pub mod fewshot;
pub mod nearest;
pub mod probe;
pub mod recon;
pub mod throughput;

use super::results::{self, Comparison, ImageScore, ResultFile, Sample, Verdict};
use super::suite_kind::{BoardEntry, Ctx, Outcome, SuiteKind};
use crate::error::Result;
use crate::util::toml_ext::key_at;
use fewshot::Fewshot;
use nearest::NearestSupport;
use probe::LinearProbe;
use recon::Reconstruction;
use throughput::Throughput;

/// A `group` suite: the suites it runs, in order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub suites: Vec<String>,
}

/// A suite's checked settings, by kind.
// One value per loaded suite: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum KindSettings {
    LinearProbe(<LinearProbe as SuiteKind>::Checked),
    Fewshot(<Fewshot as SuiteKind>::Checked),
    NearestSupport(<NearestSupport as SuiteKind>::Checked),
    Group(GroupSpec),
    Reconstruction(<Reconstruction as SuiteKind>::Checked),
    Throughput(<Throughput as SuiteKind>::Checked),
}

pub const KINDS: &[&str] = &[
    LinearProbe::NAME,
    Fewshot::NAME,
    NearestSupport::NAME,
    "group",
    Reconstruction::NAME,
    Throughput::NAME,
];

/// A suite body (the table without `kind` and `description`) parsed and checked by `kind`.
pub fn parse(kind: &str, body: &toml::Table) -> std::result::Result<KindSettings, Vec<String>> {
    Ok(match kind {
        LinearProbe::NAME => KindSettings::LinearProbe(parse_as::<LinearProbe>(body)?),
        Fewshot::NAME => KindSettings::Fewshot(parse_as::<Fewshot>(body)?),
        NearestSupport::NAME => KindSettings::NearestSupport(parse_as::<NearestSupport>(body)?),
        Reconstruction::NAME => KindSettings::Reconstruction(parse_as::<Reconstruction>(body)?),
        Throughput::NAME => KindSettings::Throughput(parse_as::<Throughput>(body)?),
        "group" => KindSettings::Group(deserialize(body)?),
        other => {
            return Err(vec![format!(
                "`kind`: `{other}` is not a suite kind (known: {})",
                KINDS.join(", ")
            )])
        }
    })
}

/// Run a checked suite (groups are expanded before they get here).
pub fn run(spec: &KindSettings, cx: &Ctx) -> Result<Outcome> {
    match spec {
        KindSettings::LinearProbe(s) => LinearProbe::run(s, cx),
        KindSettings::Fewshot(s) => Fewshot::run(s, cx),
        KindSettings::NearestSupport(s) => NearestSupport::run(s, cx),
        KindSettings::Reconstruction(s) => Reconstruction::run(s, cx),
        KindSettings::Throughput(s) => Throughput::run(s, cx),
        KindSettings::Group(_) => Err(crate::Error::Msg(format!(
            "suite `{}` is a group: expand it into its suites first",
            cx.suite.name
        ))),
    }
}

/// Whether `--dry-run` means anything to a suite's kind (see [`SuiteKind::DRY_RUNS`]).
pub fn dry_runs(spec: &KindSettings) -> bool {
    match spec {
        KindSettings::LinearProbe(_) => LinearProbe::DRY_RUNS,
        KindSettings::Fewshot(_) => Fewshot::DRY_RUNS,
        KindSettings::NearestSupport(_) => NearestSupport::DRY_RUNS,
        KindSettings::Reconstruction(_) => Reconstruction::DRY_RUNS,
        KindSettings::Throughput(_) => Throughput::DRY_RUNS,
        KindSettings::Group(_) => false,
    }
}

/// The board's rows for a result, by its kind (an unknown kind: by representation).
pub fn board_rows(r: &ResultFile) -> Vec<BoardEntry> {
    match r.kind.as_str() {
        LinearProbe::NAME => LinearProbe::board_rows(r),
        Fewshot::NAME => Fewshot::board_rows(r),
        NearestSupport::NAME => NearestSupport::board_rows(r),
        Reconstruction::NAME => Reconstruction::board_rows(r),
        Throughput::NAME => Throughput::board_rows(r),
        _ => super::suite_kind::rows_by_rep(r, &[]),
    }
}

/// A result compared with its baseline metric by metric ([`results::compare_paired`]), under
/// its kind's rules: a kind whose metrics measure the machine calls a significant gain
/// `improved`, not a stale baseline; a metric that measures the machine itself
/// ([`SuiteKind::machine_bound`]) compared across machine kinds has a significant drop called
/// `slower, other machine`, said and not gated. The report and the board both judge by this.
pub fn compare(
    base: &ResultFile,
    base_s: Option<&[Sample]>,
    base_v: Option<&[ImageScore]>,
    cur: &ResultFile,
    cur_s: Option<&[Sample]>,
    cur_v: Option<&[ImageScore]>,
) -> Vec<Comparison> {
    let mut rows = results::compare_paired(base, base_s, base_v, cur, cur_s, cur_v);
    let speeds = machine_dependent(&cur.kind);
    let same_machine =
        crate::util::provenance::same_machine_kind(&base.extra["machine"], &cur.extra["machine"]);
    for r in rows.iter_mut() {
        match r.verdict {
            Verdict::Stale if speeds => r.verdict = Verdict::Improved,
            Verdict::Regression if !same_machine && machine_bound(&cur.kind, &r.metric) => {
                r.verdict = Verdict::SlowerElsewhere
            }
            _ => {}
        }
    }
    rows
}

/// Whether a metric of a kind measures the machine itself ([`SuiteKind::machine_bound`]).
fn machine_bound(kind: &str, metric: &str) -> bool {
    match kind {
        LinearProbe::NAME => LinearProbe::machine_bound(metric),
        Fewshot::NAME => Fewshot::machine_bound(metric),
        NearestSupport::NAME => NearestSupport::machine_bound(metric),
        Reconstruction::NAME => Reconstruction::machine_bound(metric),
        Throughput::NAME => Throughput::machine_bound(metric),
        _ => false,
    }
}

/// Whether a kind's metrics measure the machine (see [`SuiteKind::MACHINE_DEPENDENT`]).
pub fn machine_dependent(kind: &str) -> bool {
    match kind {
        LinearProbe::NAME => LinearProbe::MACHINE_DEPENDENT,
        Fewshot::NAME => Fewshot::MACHINE_DEPENDENT,
        NearestSupport::NAME => NearestSupport::MACHINE_DEPENDENT,
        Reconstruction::NAME => Reconstruction::MACHINE_DEPENDENT,
        Throughput::NAME => Throughput::MACHINE_DEPENDENT,
        _ => false,
    }
}

/// What `report` says of a result beyond its metrics, by its kind.
pub fn report_notes(r: &ResultFile) -> Vec<String> {
    match r.kind.as_str() {
        LinearProbe::NAME => LinearProbe::report_notes(r),
        Fewshot::NAME => Fewshot::report_notes(r),
        NearestSupport::NAME => NearestSupport::report_notes(r),
        Reconstruction::NAME => Reconstruction::report_notes(r),
        Throughput::NAME => Throughput::report_notes(r),
        _ => Vec::new(),
    }
}

fn parse_as<K: SuiteKind>(body: &toml::Table) -> std::result::Result<K::Checked, Vec<String>> {
    K::check(deserialize(body)?)
}

/// Deserialise from text, so that a bad key is reported with its dotted name.
fn deserialize<T: serde::de::DeserializeOwned>(
    body: &toml::Table,
) -> std::result::Result<T, Vec<String>> {
    let text = toml::to_string(body).unwrap_or_default();
    toml::from_str::<T>(&text).map_err(|e| {
        let key = e
            .span()
            .map(|sp| key_at(&text, sp.start))
            .unwrap_or_default();
        let msg = e.message().trim().replace('\n', " ");
        vec![if key.is_empty() {
            msg
        } else {
            format!("`{key}`: {msg}")
        }]
    })
}

/// `Err(problems)` unless there are none.
pub(crate) fn checked<T>(value: T, problems: Vec<String>) -> std::result::Result<T, Vec<String>> {
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems)
    }
}
