//! Many targets in one run (`T1 T2 … --manifest-dir DIR`, docs/CONTRACT.md
//! "Many targets in one run"): every target and manifest is checked before
//! the first byte is written to any of them; then one thread per target does
//! what a single-target run does (its own engine, manifest, metrics), and
//! the run ends with one summary, one JSON report with a section per target
//! and one exit status, the worst of the targets'.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::phases::{
    WritePlan, emit_summary_and_json, finish_metrics, manifest_for, open_planned, plan_write,
};
use super::soak::SoakSettings;
use super::{run, soak, verify, write};
use crate::cli::{RunArgs, SoakArgs, TargetArgs, TargetsArgs, VerifyArgs, WriteArgs};
use crate::config::{VerifyConfig, WriteConfig};
use crate::error::{Error, Result, one_line};
use crate::exit::ExitCode;
use crate::manifest::Manifest;
use crate::metrics::MetricsRecording;
use crate::report::{MULTI_SCHEMA, MultiReport, Report, TargetRun, junit};
use crate::storage::Target;

/// What the command line names: one target with its `--manifest`, or
/// targets whose manifests live in `--manifest-dir`.
pub(super) enum Targets {
    One(TargetArgs),
    Many(Vec<Member>),
}

/// One target of a run over many: its name, its target and its manifest.
pub(super) struct Member {
    pub(super) name: String,
    pub(super) args: TargetArgs,
}

/// Longest name derived from a target (the manifest adds `.manifest`).
const MAX_NAME_BYTES: usize = 100;

/// Resolve the targets and their manifests; refuses several targets
/// without `--manifest-dir`, a directory that is not there, and a target
/// named twice.
pub(super) fn resolve(args: &TargetsArgs) -> Result<Targets> {
    let Some(dir) = &args.manifest_dir else {
        let Some(manifest) = args.manifest.clone() else {
            return Err(Error::usage(
                "give --manifest M for one target, or --manifest-dir DIR for several",
            ));
        };
        return match args.targets.as_slice() {
            [target] => Ok(Targets::One(TargetArgs {
                target: target.clone(),
                manifest,
            })),
            many => Err(Error::usage(format!(
                "{} targets need --manifest-dir DIR (a manifest per target, named after it); --manifest is the manifest of one target",
                many.len()
            ))),
        };
    };
    if !dir.is_dir() {
        return Err(Error::usage(format!(
            "bad --manifest-dir {}: not a directory; create it first",
            dir.display()
        )));
    }
    refuse_duplicates(&args.targets)?;
    let names = names_for(&args.targets);
    Ok(Targets::Many(
        args.targets
            .iter()
            .zip(names)
            .map(|(target, name)| Member {
                args: TargetArgs {
                    target: target.clone(),
                    manifest: dir.join(format!("{name}.manifest")),
                },
                name,
            })
            .collect(),
    ))
}

/// The name of a target in a run over many (its manifest is
/// `NAME.manifest`): the target as given, without a leading `./` or `/`,
/// each run of characters other than letters, digits, `.`, `-` and `_`
/// made one `_`, leading and trailing `.` and `_` dropped, at most 100
/// bytes; `target` if nothing is left. `/dev/sdb` is `dev_sdb`,
/// `images/a.img` is `images_a.img`.
pub fn target_name(target: &str) -> String {
    let mut rest = target;
    while let Some(stripped) = rest.strip_prefix("./") {
        rest = stripped;
    }
    let mut name = String::new();
    for c in rest.chars() {
        let kept = c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if kept {
            name.push(c);
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    let mut name = name.trim_matches(['.', '_']).to_string();
    name.truncate(MAX_NAME_BYTES);
    let name = name.trim_end_matches(['.', '_']);
    if name.is_empty() {
        "target".to_string()
    } else {
        name.to_string()
    }
}

/// Each target's name; targets whose names coincide (`a/b.img` and
/// `a_b.img`) each get `-` and the CRC-32C of the target as given, in 8 hex
/// digits, so a name depends only on its target and the others of the run.
fn names_for(targets: &[String]) -> Vec<String> {
    let plain: Vec<String> = targets.iter().map(|t| target_name(t)).collect();
    plain
        .iter()
        .zip(targets)
        .map(|(name, target)| {
            if plain.iter().filter(|n| *n == name).count() > 1 {
                format!("{name}-{:08x}", crc32c::crc32c(target.as_bytes()))
            } else {
                name.clone()
            }
        })
        .collect()
}

/// The same target twice would be written by two writers at once, each
/// making the other's blocks look corrupt: refused when two targets are the
/// same text, the same path once made absolute, or share storage (the same
/// file or block device, a disk and one of its partitions, a loop device
/// and its backing file).
fn refuse_duplicates(targets: &[String]) -> Result<()> {
    use crate::storage::blockdev::safety::Footprint;
    let footprint = |target: &str| -> Option<Footprint> {
        (!crate::storage::is_nbd_uri(target))
            .then(|| Footprint::of(std::path::Path::new("/sys"), std::path::Path::new(target)))
            .flatten()
    };
    let absolute = |target: &str| -> Option<PathBuf> {
        (!crate::storage::is_nbd_uri(target))
            .then(|| std::path::absolute(target).ok())
            .flatten()
    };
    let seen: Vec<(Option<Footprint>, Option<PathBuf>)> = targets
        .iter()
        .map(|t| (footprint(t), absolute(t)))
        .collect();
    for (i, target) in targets.iter().enumerate() {
        for (j, earlier) in targets[..i].iter().enumerate() {
            if target == earlier {
                return Err(Error::usage(format!(
                    "target {target} is given twice; name each target once"
                )));
            }
            let same = seen[i].0.is_some() && seen[i].0 == seen[j].0
                || (seen[i].1.is_some() && seen[i].1 == seen[j].1);
            if same {
                return Err(Error::usage(format!(
                    "targets {earlier} and {target} are the same target; name each target once"
                )));
            }
            if let (Some(a), Some(b)) = (&seen[i].0, &seen[j].0)
                && a.overlaps(b)
            {
                return Err(Error::usage(format!(
                    "targets {earlier} and {target} share storage (a partition of a disk, or a loop device and its backing file); writing both at once would make each one's blocks look corrupt in the other; give one of them"
                )));
            }
        }
    }
    Ok(())
}

/// An error of one target, naming it.
fn in_target(member: &Member, error: Error) -> Error {
    let uri = &member.args.target;
    match error {
        Error::Usage(message) => Error::usage(format!("target {uri}: {message}")),
        Error::Run(message) => Error::run(format!("target {uri}: {message}")),
    }
}

/// `--disrupt` runs one command against the target of a run; a run over
/// many targets does not schedule it (docs/CONTRACT.md).
fn refuse_disrupt(config: &WriteConfig) -> Result<()> {
    if config.disrupt.is_some() {
        return Err(Error::usage(
            "--disrupt is not supported with --manifest-dir: disrupt one target per run (or script the disruption beside a run over many targets)",
        ));
    }
    Ok(())
}

/// `FILE` of a per-target output (`--metrics`, `--prometheus`) for one
/// target: `STEM.NAME.EXT` beside it (`m.jsonl` → `m.disk.img.jsonl`).
pub fn per_target_path(path: &Path, name: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = match path.extension() {
        Some(ext) => format!("{stem}.{name}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{name}"),
    };
    path.with_file_name(file)
}

/// Each target's write settings (`config_for` it, with its own
/// `--prometheus` file) and metrics recording (its own `--metrics` file).
fn write_recordings(
    members: &[Member],
    config_for: impl Fn(&Member) -> WriteConfig,
    metrics: Option<&Path>,
    command: &'static str,
) -> Result<(Vec<WriteConfig>, Vec<MetricsRecording>)> {
    let mut configs = Vec::new();
    let mut recordings = Vec::new();
    for member in members {
        let mut config = config_for(member);
        config.prometheus = config
            .prometheus
            .as_deref()
            .map(|p| per_target_path(p, &member.name));
        let path = metrics.map(|p| per_target_path(p, &member.name));
        let recording =
            super::phases::start_recording(path.as_deref(), &config, command, &member.args.target)?;
        config.options.metrics = Some(recording.metrics());
        configs.push(config);
        recordings.push(recording);
    }
    Ok((configs, recordings))
}

/// Where a file target stood before the run opened it, to put it back if
/// another target is refused.
enum Before {
    /// Not a regular file (a device, an NBD export): opening changes nothing.
    Untouched,
    Missing(PathBuf),
    Sized(PathBuf, u64),
}

impl Before {
    fn of(uri: &str) -> Before {
        if crate::storage::is_nbd_uri(uri) {
            return Before::Untouched;
        }
        match std::fs::metadata(uri) {
            Ok(meta) if meta.is_file() => Before::Sized(uri.into(), meta.len()),
            Ok(_) => Before::Untouched,
            Err(_) => Before::Missing(uri.into()),
        }
    }

    /// Remove an image the run created, or cut one it extended back.
    fn restore(&self) {
        match self {
            Before::Untouched => {}
            Before::Missing(path) => {
                let _ = std::fs::remove_file(path);
            }
            Before::Sized(path, len) => {
                if std::fs::metadata(path).is_ok_and(|m| m.len() != *len)
                    && let Ok(file) = std::fs::OpenOptions::new().write(true).open(path)
                {
                    let _ = file.set_len(*len);
                }
            }
        }
    }
}

/// Check every target and manifest, then open every target (creating or
/// extending image files), then create the manifests. A target refused at
/// any step leaves every target and manifest as it found them: nothing is
/// written to any target before all are ready.
fn prepare_all(
    members: &[Member],
    (configs, recordings): (Vec<WriteConfig>, Vec<MetricsRecording>),
    verify: Option<&VerifyConfig>,
) -> Result<Vec<Ready>> {
    let read_engine = verify.map(|v| v.engine);
    let plans: Vec<WritePlan> = members
        .iter()
        .zip(&configs)
        .map(|(member, config)| {
            plan_write(&member.args, config, read_engine).map_err(|e| in_target(member, e))
        })
        .collect::<Result<_>>()?;
    let mut before = Vec::new();
    let mut opened = Vec::new();
    let undo = |opened: Vec<Arc<dyn Target>>, before: &[Before]| {
        drop(opened);
        before.iter().for_each(Before::restore);
    };
    for ((member, config), plan) in members.iter().zip(&configs).zip(&plans) {
        before.push(Before::of(&member.args.target));
        match open_planned(&member.args, config, plan) {
            Ok(target) => opened.push(target),
            Err(error) => {
                undo(opened, &before);
                return Err(in_target(member, error));
            }
        }
    }
    let mut prepared = Vec::new();
    let mut created = Vec::new();
    let mut targets = opened.into_iter();
    for ((member, config), plan) in members.iter().zip(&configs).zip(plans) {
        let target = targets.next().expect("one opened target per member");
        let new = plan.existing.is_none();
        match manifest_for(&member.args, config, plan, &target) {
            Ok(manifest) => {
                if new {
                    created.push(member.args.manifest.clone());
                }
                prepared.push((manifest, target));
            }
            Err(error) => {
                let rest: Vec<Arc<dyn Target>> = prepared
                    .into_iter()
                    .map(|(_, t)| t)
                    .chain([target])
                    .chain(targets)
                    .collect();
                for path in &created {
                    let _ = std::fs::remove_file(path);
                }
                undo(rest, &before);
                return Err(in_target(member, error));
            }
        }
    }
    Ok(prepared
        .into_iter()
        .zip(configs)
        .zip(recordings)
        .map(|(((manifest, target), config), recording)| {
            let mut verify = verify.cloned().unwrap_or_else(VerifyConfig::after_writes);
            verify.options.metrics = Some(recording.metrics());
            recording.run_started(manifest.header().run_id);
            Ready {
                manifest,
                target,
                config,
                verify,
                recording,
            }
        })
        .collect())
}

/// One target ready to write: its manifest, the target, its settings
/// (those of its verify record into its metrics too) and its metrics
/// recording, told the run's id.
struct Ready {
    manifest: Manifest,
    target: Arc<dyn Target>,
    config: WriteConfig,
    verify: VerifyConfig,
    recording: MetricsRecording,
}

/// What one target's thread brought back.
struct Done {
    report: Option<Report>,
    /// Findings outside the report's verify (the rolling read-back of a
    /// `write`, a soak's interval verifies).
    findings: bool,
    interrupted: bool,
}

/// Run `work` for every target at once, one thread each; each thread's
/// lines name its target.
fn in_parallel<T: Send>(
    members: &[Member],
    items: Vec<T>,
    work: impl Fn(&Member, T) -> Result<Done> + Sync,
) -> Vec<Result<Done>> {
    crate::progress::quiet();
    let work = &work;
    std::thread::scope(|scope| {
        let threads: Vec<_> = members
            .iter()
            .zip(items)
            .map(|(member, item)| {
                scope.spawn(move || {
                    crate::signals::set_line_prefix(format!("[{}] ", member.name));
                    work(member, item)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err(Error::run("its thread panicked (a bug)")))
            })
            .collect()
    })
}

/// How the end of a run over many is shown and written.
struct Outputs<'a> {
    command: &'static str,
    show: usize,
    json: Option<&'a str>,
    junit: Option<&'a Path>,
}

impl Outputs<'_> {
    /// What `--show`, `--json` and `--junit` ask of `command`.
    fn of<'a>(command: &'static str, config: &'a VerifyConfig) -> Outputs<'a> {
        Outputs {
            command,
            show: config.show,
            json: config.json.as_deref(),
            junit: config.junit.as_deref(),
        }
    }
}

/// The summary, the report and the exit status of a run over many.
fn finish(
    members: &[Member],
    results: Vec<Result<Done>>,
    outputs: Outputs<'_>,
) -> Result<ExitCode> {
    let mut sections = Vec::new();
    for (member, result) in members.iter().zip(results) {
        let mut section = TargetRun {
            name: member.name.clone(),
            target: member.args.target.clone(),
            manifest: member.args.manifest.display().to_string(),
            outcome: String::new(),
            exit_status: 0,
            interrupted: false,
            error: None,
            report: None,
        };
        let code = match result {
            Err(error) => {
                section.error = Some(one_line(&error.to_string()));
                ExitCode::RunFailed
            }
            Ok(done) => {
                section.interrupted = done.interrupted;
                let code = match &done.report {
                    Some(report) if report.target_lost.is_some() => {
                        section.error = Some(format!(
                            "verify stopped: the target was lost after {} of {} block(s) were checked: {}",
                            report.blocks.checked,
                            report.blocks.total,
                            report.target_lost.as_deref().unwrap_or_default()
                        ));
                        ExitCode::RunFailed
                    }
                    Some(report) if !report.clean => ExitCode::Findings,
                    _ if done.findings => ExitCode::Findings,
                    _ => ExitCode::Clean,
                };
                section.report = done.report;
                code
            }
        };
        section.exit_status = code as u8;
        section.outcome = match code {
            ExitCode::Clean => "clean",
            ExitCode::Findings => "findings",
            _ => "failed",
        }
        .to_string();
        sections.push(section);
    }
    let multi = multi_report(outputs.command, sections);
    let summary = human_summary(&multi, outputs.show);
    emit_summary_and_json(&summary, outputs.json, || multi.to_json())?;
    if let Some(path) = outputs.junit {
        junit_of(&multi).write(path)?;
    }
    for section in &multi.targets {
        if let Some(error) = &section.error {
            eprintln!("blockstamp: target {}: {error}", section.target);
        }
    }
    Ok(match multi.exit_status {
        0 => ExitCode::Clean,
        1 => ExitCode::Findings,
        2 => ExitCode::BadInput,
        _ => ExitCode::RunFailed,
    })
}

fn multi_report(command: &str, targets: Vec<TargetRun>) -> MultiReport {
    let mut findings_by_class: BTreeMap<String, u64> = BTreeMap::new();
    for report in targets.iter().filter_map(|t| t.report.as_ref()) {
        for (class, count) in &report.findings_by_class {
            *findings_by_class.entry(class.clone()).or_default() += count;
        }
    }
    MultiReport {
        schema: MULTI_SCHEMA.to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        host: crate::report::hostname(),
        command: command.to_string(),
        clean: targets.iter().all(|t| t.outcome == "clean"),
        exit_status: targets.iter().map(|t| t.exit_status).max().unwrap_or(0),
        target_count: targets.len(),
        targets_with_findings: targets.iter().filter(|t| t.outcome == "findings").count(),
        failed_targets: targets.iter().filter(|t| t.outcome == "failed").count(),
        interrupted: targets.iter().any(|t| t.interrupted),
        findings_by_class,
        targets,
    }
}

/// Each target's own summary under a line naming it, then the run's
/// verdict in one line.
fn human_summary(multi: &MultiReport, show: usize) -> String {
    let mut out = String::new();
    for section in &multi.targets {
        let verdict = match section.outcome.as_str() {
            "clean" => "clean",
            "findings" => "FINDINGS",
            _ => "FAILED",
        };
        if section.name == section.target {
            let _ = writeln!(out, "== {}: {verdict}", section.name);
        } else {
            let _ = writeln!(out, "== {} ({}): {verdict}", section.name, section.target);
        }
        match (&section.report, &section.error) {
            (Some(report), None) => out.push_str(&report.human_summary(show)),
            (_, Some(error)) => {
                let _ = writeln!(out, "failed: {error}");
            }
            (None, None) if section.outcome == "findings" => {
                let _ = writeln!(
                    out,
                    "FINDINGS: the rolling read-back found blocks not as written (see its lines above)"
                );
            }
            (None, None) => {
                let _ = writeln!(out, "written");
            }
        }
    }
    let _ = writeln!(
        out,
        "{} target(s): {} clean, {} with findings, {} failed{}",
        multi.target_count,
        multi.target_count - multi.targets_with_findings - multi.failed_targets,
        multi.targets_with_findings,
        multi.failed_targets,
        if multi.interrupted {
            "; the writing was stopped early by a signal"
        } else {
            ""
        }
    );
    out
}

/// A suite per target: its report's checks, or one errored case for a
/// target that failed before its verify ended.
fn junit_of(multi: &MultiReport) -> junit::TestSuites {
    let finished = crate::manifest::unix_now_s();
    let suites = multi
        .targets
        .iter()
        .map(|section| match &section.report {
            Some(report) => junit::report_suite(report, junit::Scope::Run, Some(finished)),
            None => junit::TestSuite {
                name: section.target.clone(),
                hostname: multi.host.clone(),
                started_unix_s: None,
                time_s: 0.0,
                properties: vec![("manifest".to_string(), section.manifest.clone())],
                cases: vec![junit::TestCase {
                    name: "verify".to_string(),
                    classname: section.name.clone(),
                    time_s: 0.0,
                    outcome: junit::Outcome::Error(junit::Failure {
                        kind: "run_failed".to_string(),
                        message: section.error.clone().unwrap_or_default(),
                        detail: String::new(),
                    }),
                }],
                system_out: None,
            },
        })
        .collect();
    junit::TestSuites { suites }
}

pub(super) fn write_command(args: &WriteArgs, members: Vec<Member>) -> Result<ExitCode> {
    let started = Instant::now();
    let config = WriteConfig::from_flags(&args.write)?;
    refuse_disrupt(&config)?;
    let recorded = write_recordings(
        &members,
        |_| config.clone(),
        args.metrics.metrics.as_deref(),
        "write",
    )?;
    let items = prepare_all(&members, recorded, None)?;
    let results = in_parallel(
        &members,
        items,
        |_,
         Ready {
             mut manifest,
             target,
             config,
             recording,
             ..
         }: Ready| {
            let (code, interrupted) =
                write::write_prepared(&mut manifest, &target, config, started)?;
            finish_metrics(recording);
            Ok(Done {
                report: None,
                findings: code != ExitCode::Clean,
                interrupted,
            })
        },
    );
    finish(
        &members,
        results,
        Outputs {
            command: "write",
            show: 0,
            json: None,
            junit: None,
        },
    )
}

pub(super) fn run_command(args: &RunArgs, members: Vec<Member>) -> Result<ExitCode> {
    let started = Instant::now();
    let config = WriteConfig::from_flags(&args.write)?;
    let verify_config = shared_verify(&args.verify, args.verify.threads, members.len())?;
    refuse_disrupt(&config)?;
    let recorded = write_recordings(
        &members,
        |_| config.clone(),
        args.metrics.metrics.as_deref(),
        "run",
    )?;
    let items = prepare_all(&members, recorded, Some(&verify_config))?;
    let results = in_parallel(
        &members,
        items,
        |_,
         Ready {
             mut manifest,
             target,
             config,
             verify,
             recording,
         }: Ready| {
            let (report, interrupted) =
                run::run_prepared(&mut manifest, target, config, &verify, started)?;
            finish_metrics(recording);
            Ok(Done {
                report: Some(report),
                findings: false,
                interrupted,
            })
        },
    );
    finish(&members, results, Outputs::of("run", &verify_config))
}

pub(super) fn soak_command(args: &SoakArgs, members: Vec<Member>) -> Result<ExitCode> {
    let started = Instant::now();
    let settings = SoakSettings::from_args(args)?;
    refuse_disrupt(&settings.write)?;
    let mut verify_config = settings.verify.clone();
    share_verify_threads(&mut verify_config, args.verify.threads, members.len());
    let (duration, verify_every) = (settings.duration, settings.verify_every);
    let recorded = write_recordings(
        &members,
        |member| {
            let mut config = settings.write.clone();
            soak::reconnect_by_default(&mut config, args, &member.args.target);
            config
        },
        args.metrics.metrics.as_deref(),
        "soak",
    )?;
    let items = prepare_all(&members, recorded, Some(&verify_config))?;
    let results = in_parallel(
        &members,
        items,
        |_,
         Ready {
             mut manifest,
             target,
             config,
             verify,
             recording,
         }: Ready| {
            let (report, earlier_findings) = soak::soak_prepared(
                &recording,
                &mut manifest,
                &target,
                config,
                &verify,
                (duration, verify_every),
                started,
            )?;
            finish_metrics(recording);
            let interrupted = report.soak.as_ref().is_some_and(|s| s.stopped_by_signal);
            Ok(Done {
                report: Some(report),
                findings: earlier_findings,
                interrupted,
            })
        },
    );
    finish(&members, results, Outputs::of("soak", &verify_config))
}

pub(super) fn verify_command(args: &VerifyArgs, members: Vec<Member>) -> Result<ExitCode> {
    let started = Instant::now();
    let config = shared_verify(&args.verify, args.verify.threads, members.len())?;
    let loss = crate::config::loss_policy(&args.target_loss, std::time::Duration::ZERO)?;
    let opened: Vec<(Manifest, Arc<dyn Target>)> = members
        .iter()
        .map(|member| {
            verify::open_checked(args, &member.args, &loss).map_err(|e| in_target(member, e))
        })
        .collect::<Result<_>>()?;
    let recordings: Vec<MetricsRecording> = members
        .iter()
        .map(|member| {
            let path = args
                .metrics
                .metrics
                .as_deref()
                .map(|p| per_target_path(p, &member.name));
            MetricsRecording::start(path.as_deref())
        })
        .collect::<Result<_>>()?;
    let items = opened.into_iter().zip(recordings).collect();
    let at = args.at.as_deref();
    let results = in_parallel(
        &members,
        items,
        |_, ((manifest, target), recording): ((Manifest, Arc<dyn Target>), MetricsRecording)| {
            let mut config = config.clone();
            config.options.metrics = Some(recording.metrics());
            let report = verify::verify_opened(&manifest, target, at, &config, started)?;
            finish_metrics(recording);
            Ok(Done {
                report: Some(report),
                findings: false,
                interrupted: false,
            })
        },
    );
    finish(&members, results, Outputs::of("verify", &config))
}

/// The verify settings every target shares; the human lines go to stderr
/// when the report takes stdout.
fn shared_verify(
    flags: &crate::cli::VerifyFlags,
    threads: Option<usize>,
    targets: usize,
) -> Result<VerifyConfig> {
    let mut config = VerifyConfig::from_flags(flags)?;
    crate::signals::human_to_stderr(config.json.as_deref() == Some("-"));
    share_verify_threads(&mut config, threads, targets);
    Ok(config)
}

/// Without `--threads`, the targets share the cores: each verify checks on
/// cores / targets threads (at least one) instead of one per core.
fn share_verify_threads(config: &mut VerifyConfig, threads: Option<usize>, targets: usize) {
    if threads.is_none() {
        config.options.threads = (config.options.threads / targets.max(1)).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_name_is_its_path_made_safe_for_a_file_name() {
        assert_eq!(target_name("disk.img"), "disk.img");
        assert_eq!(target_name("./disk.img"), "disk.img");
        assert_eq!(target_name("/dev/sdb"), "dev_sdb");
        assert_eq!(target_name("images/a b.img"), "images_a_b.img");
        assert_eq!(target_name("../up.img"), "up.img");
        assert_eq!(
            target_name("nbd+unix:///disk?socket=/run/nbd.sock"),
            "nbd_unix_disk_socket_run_nbd.sock"
        );
        assert_eq!(
            target_name("nbd://10.0.0.7:10809/lun3"),
            "nbd_10.0.0.7_10809_lun3"
        );
        assert_eq!(target_name("///"), "target");
        assert_eq!(target_name(&"x".repeat(300)).len(), MAX_NAME_BYTES);
    }

    #[test]
    fn targets_whose_names_coincide_each_get_their_checksum() {
        let targets = [
            "a/b.img".to_string(),
            "a_b.img".to_string(),
            "c.img".to_string(),
        ];
        let names = names_for(&targets);
        assert_eq!(
            names[0],
            format!("a_b.img-{:08x}", crc32c::crc32c(b"a/b.img"))
        );
        assert_eq!(
            names[1],
            format!("a_b.img-{:08x}", crc32c::crc32c(b"a_b.img"))
        );
        assert_eq!(names[2], "c.img");
    }

    #[test]
    fn a_per_target_output_file_carries_the_target_name() {
        assert_eq!(
            per_target_path(Path::new("out/m.jsonl"), "disk.img"),
            PathBuf::from("out/m.disk.img.jsonl")
        );
        assert_eq!(
            per_target_path(Path::new("metrics"), "dev_sdb"),
            PathBuf::from("metrics.dev_sdb")
        );
    }
}
