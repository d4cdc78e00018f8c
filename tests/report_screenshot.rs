//! `report RUN.json --html` rendered by headless Chromium: the page must
//! draw (banner, class colours, charts), not merely exist. Needs the Debian
//! package `chromium` (scripts/test.sh installs it); skipped with a message
//! where it is missing, a failure under CI=true.
//!
//! The screenshot is kept in the target directory (the test prints where)
//! for a person to look at.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::need::{Need, chromium, require};
use common::{Image, TestEnv, run_bounded, snapshot};
use serde_json::Value;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 2000;

/// A night with real data: the metrics of a 3 s `run` (write then verify)
/// with one disruption — the command freezes blockstamp itself (SIGSTOP to
/// its parent, the blockstamp process) for 0.8 s, a real stall of every IO
/// on a plain image file — and the findings of a verify after the image
/// was damaged five ways.
fn night_report(env: &TestEnv) -> Value {
    let image = "disk.img";
    env.write(image, "m", &["--size", "16MiB"]);
    snapshot(&env.path(image), &env.path("old.img"));
    env.run(&[
        "run",
        image,
        "--manifest",
        "m",
        "--passes",
        "100000",
        "--duration",
        "3s",
        "--disrupt",
        "kill -STOP $PPID; sleep 0.8; kill -CONT $PPID",
        "--disrupt-at",
        "1s",
        "--json",
        "run.json",
    ])
    .assert_code(0);
    let old = Image::open(&env.path("old.img"), 4096);
    let disk = Image::open(&env.path(image), 4096);
    disk.copy_block_from(&old, 17, 17); // lost_write
    disk.flip_bit(99, 1000, 3); // corrupt
    disk.zero_block(2000); // zeroed
    disk.zero_block(2001);
    disk.write_block(3000, &disk.read_block(3001)); // misdirected
    disk.splice_sectors(&old, 40, 4..8); // torn
    disk.sync();
    let verify = env.verify(image, "m", &[]);
    verify.assert_code(1);
    let mut night = verify.report();
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("run.json")).unwrap()).unwrap();
    night["metrics"] = run["metrics"].clone();
    night["disruptions"] = run["disruptions"].clone();
    night
}

/// RGB pixels of a PNG screenshot.
fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("open screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert!(
        channels >= 3,
        "colour screenshot, got {:?}",
        info.color_type
    );
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

fn hex(color: &str) -> [u8; 3] {
    let c = u32::from_str_radix(color.trim_start_matches('#'), 16).unwrap();
    [(c >> 16) as u8, (c >> 8) as u8, c as u8]
}

fn count_near(pixels: &[[u8; 3]], color: [u8; 3]) -> usize {
    pixels
        .iter()
        .filter(|p| (0..3).all(|i| p[i].abs_diff(color[i]) <= 6))
        .count()
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    if !require(Need::Chromium) {
        return;
    }
    let chromium = chromium().expect("require() found chromium");
    let env = TestEnv::new();
    let night = night_report(&env);
    std::fs::write(env.path("night.json"), night.to_string()).unwrap();
    env.run(&["report", "night.json", "--html", "night.html"])
        .assert_code(0);

    let screenshot = env.path("night.png");
    let profile = env.path("chromium-profile");
    let mut command = Command::new(&chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("file://{}", env.path("night.html").display()));
    let run = run_bounded(command, Duration::from_secs(120));
    assert!(
        screenshot.exists(),
        "chromium wrote no screenshot (exit {}):\n{}",
        run.code,
        run.stderr
    );
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    std::fs::copy(&screenshot, &kept).expect("keep the screenshot");
    std::fs::copy(env.path("night.html"), kept.with_extension("html")).expect("keep the page");
    eprintln!("screenshot: {}", kept.display());

    let size = std::fs::metadata(&screenshot).unwrap().len();
    assert!(
        size > 50_000,
        "a screenshot of a full page, not {size} bytes"
    );
    let (width, height, pixels) = decode(&screenshot);
    assert_eq!((width, height), (WIDTH, HEIGHT));
    // The red banner of a report with findings, across the top.
    let top = &pixels[..(WIDTH * 150) as usize];
    assert!(count_near(top, hex("#c62828")) > 50_000, "verdict banner");
    // Class colours in chips, map cells and the findings table.
    for (class, color) in [
        ("lost_write", "#d62728"),
        ("misdirected", "#ff7f0e"),
        ("corrupt", "#8c2d04"),
        ("zeroed", "#3b4cc0"),
    ] {
        assert!(
            count_near(&pixels, hex(color)) > 200,
            "{class} colour drawn"
        );
    }
    // Incidents: numbered in their own colours (the table, the write
    // axis), which no class and no chart uses.
    for (incident, color) in [(2, "#1b5e20"), (3, "#4a148c")] {
        assert!(
            count_near(&pixels, hex(color)) > 80,
            "incident #{incident} drawn in its colour"
        );
    }
    // The stall shaded on the three time charts: about 0.8 s of a 3 s
    // timeline, 170 units high, on each.
    let stall = night["disruptions"][0]["stall_s"]
        .as_f64()
        .expect("a stall");
    assert!(stall >= 0.7, "the freeze stalled every IO: {stall} s");
    assert!(
        count_near(&pixels, hex("#fbe3bf")) > 3 * 100 * 120,
        "stall bands drawn"
    );
    // Chart lines in the write and read colours.
    assert!(count_near(&pixels, hex("#1f77b4")) > 300, "write lines");
    assert!(count_near(&pixels, hex("#e8710a")) > 100, "read lines");
    let distinct: std::collections::HashSet<[u8; 3]> = pixels.iter().copied().collect();
    assert!(
        distinct.len() > 200,
        "text and charts: {} colours",
        distinct.len()
    );
}
