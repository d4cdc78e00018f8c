//! `blockstamp report`: the glue between its flags and `review`.

use std::path::Path;

use crate::cli::report::{CompareArgs, MergeArgs, ReportArgs, ReportView};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::report::compare::{self, Thresholds};
use crate::report::html::{fleet::fleet_page, run::run_page};
use crate::report::junit::{self, Scope};
use crate::report::{self, fleet, write_output};
use crate::units::{parse_duration, parse_percent};

pub fn run(args: &ReportArgs) -> Result<ExitCode> {
    match &args.view {
        Some(ReportView::Compare(compare)) => compare_command(compare),
        Some(ReportView::Merge(merge)) => merge_command(merge),
        None => html_command(args),
    }
}

/// `report RUN.json --html OUT.html`: exit 0 once the page is written,
/// whatever the run's verdict (the page shows it).
fn html_command(args: &ReportArgs) -> Result<ExitCode> {
    let (Some(run), Some(out)) = (&args.run, &args.html) else {
        return Err(Error::usage(
            "report needs RUN.json and --html OUT.html, or the compare or merge subcommand",
        ));
    };
    let out = output_path("--html", out)?;
    let mut reports = report::load_all(run)?;
    if reports.len() != 1 {
        // A run over many targets: its targets as a fleet.
        let fleet = fleet::merge(&reports);
        write_output(out, "HTML page", &fleet_page(&fleet))?;
        if out != "-" {
            println!(
                "wrote {out}: {} target(s), {}",
                fleet.report_count,
                if fleet.clean {
                    "clean".to_string()
                } else {
                    format!("{} with findings", fleet.reports_with_findings)
                }
            );
        }
        return Ok(ExitCode::Clean);
    }
    let (_, report) = reports.remove(0);
    write_output(out, "HTML page", &run_page(&report))?;
    if out != "-" {
        println!(
            "wrote {out}: {} on {}, {}",
            report.target.uri,
            report.host_name(),
            if report.clean {
                "clean".to_string()
            } else {
                format!("{} finding(s)", report.total_findings())
            }
        );
    }
    Ok(ExitCode::Clean)
}

fn compare_command(args: &CompareArgs) -> Result<ExitCode> {
    let thresholds = Thresholds {
        max_throughput_drop: percent("--max-throughput-drop", &args.max_throughput_drop)?,
        max_latency_rise: percent("--max-latency-rise", &args.max_latency_rise)?,
        max_new_findings: args.max_new_findings,
        max_stall_rise_s: parse_duration(&args.max_stall_rise)
            .map_err(|e| Error::usage(format!("--max-stall-rise: {e}")))?
            .as_secs_f64(),
    };
    if thresholds.max_throughput_drop > 1.0 {
        return Err(Error::usage(format!(
            "bad --max-throughput-drop '{}': throughput cannot drop by more than 100%",
            args.max_throughput_drop
        )));
    }
    let json = args
        .json
        .as_deref()
        .map(|p| output_path("--json", p))
        .transpose()?;
    let last = report::load(&args.last)?;
    let tonight = report::load(&args.tonight)?;
    let comparison = compare::compare(
        (&display(&args.last), &last),
        (&display(&args.tonight), &tonight),
        thresholds,
    );
    emit(
        &comparison.to_text(),
        json,
        "comparison",
        &comparison.to_json(),
    )?;
    Ok(if comparison.regressed {
        ExitCode::Findings
    } else {
        ExitCode::Clean
    })
}

fn merge_command(args: &MergeArgs) -> Result<ExitCode> {
    let json = args
        .json
        .as_deref()
        .map(|p| output_path("--json", p))
        .transpose()?;
    let html = args
        .html
        .as_deref()
        .map(|p| output_path("--html", p))
        .transpose()?;
    if json == Some("-") && html == Some("-") {
        return Err(Error::usage(
            "--json - and --html - both ask for stdout; send one of them to a file",
        ));
    }
    if let Some(path) = &args.junit {
        crate::outfile::check_path("--junit", path)?;
    }
    // A run over many targets counts as one report per target.
    let reports: Vec<(String, report::Report)> = args
        .reports
        .iter()
        .map(|path| report::load_all(path))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    let fleet = fleet::merge(&reports);
    if let Some(path) = &args.junit {
        let suites = reports
            .iter()
            .map(|(path, report)| junit::report_suite(report, Scope::Fleet { path }, None))
            .collect();
        junit::TestSuites { suites }.write(path)?;
    }
    if let Some(html) = html {
        write_output(html, "HTML page", &fleet_page(&fleet))?;
    }
    let text = if html == Some("-") {
        // stdout holds the page; the tables go to stderr.
        eprint!("{}", fleet.to_text());
        None
    } else {
        Some(fleet.to_text())
    };
    match text {
        Some(text) => emit(&text, json, "fleet view", &fleet.to_json())?,
        None => {
            if let Some(json) = json {
                write_output(json, "fleet view", &fleet.to_json())?;
            }
        }
    }
    Ok(if fleet.clean {
        ExitCode::Clean
    } else {
        ExitCode::Findings
    })
}

/// The table on stdout, and the JSON to its file; with `--json -` the JSON
/// takes stdout and the table goes to stderr, as `verify --json -` does.
fn emit(text: &str, json: Option<&str>, what: &str, json_text: &str) -> Result<()> {
    match json {
        Some("-") => {
            eprint!("{text}");
            write_output("-", what, json_text)
        }
        Some(path) => {
            write_output(path, what, json_text)?;
            write_output("-", what, text)
        }
        None => write_output("-", what, text),
    }
}

fn percent(flag: &str, text: &str) -> Result<f64> {
    parse_percent(text).map_err(|e| Error::usage(format!("{flag}: {e}")))
}

fn output_path<'a>(flag: &str, path: &'a str) -> Result<&'a str> {
    if path.is_empty() {
        return Err(Error::usage(format!(
            "bad {flag} '': give a file path, or - for stdout"
        )));
    }
    Ok(path)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
