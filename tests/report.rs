//! Seeing a run: TensorBoard event files read back by TensorBoard's own
//! reader, and the HTML reports loaded in a real headless browser
//! (Debian's chromium, driven over the DevTools protocol by
//! `tests/python/browser_check.py`).
//!
//! The browser test leaves its screenshots in `target/test-artifacts/report/`.
//! It measures the layout in the browser too: no two texts of a chart
//! overlap, no text or legend covers a curve, axes that count epochs or
//! steps are ticked at whole numbers, and the page says how the run was
//! made (command lines, device, wall time, the checkpoints evaluated, the
//! images skipped).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{geossl, json, run_python, tiny_pretrain, world};

/// {run: {tag: [(step, wall_time, value)]}} as TensorBoard reads `logdir`.
type Scalars = BTreeMap<String, BTreeMap<String, Vec<(i64, f64, f64)>>>;

fn tensorboard_scalars(logdir: &Path) -> Scalars {
    let json: Value = serde_json::from_str(&run_python("read_tensorboard.py", [logdir])).unwrap();
    json.as_object()
        .unwrap()
        .iter()
        .map(|(run, tags)| {
            let tags = tags
                .as_object()
                .unwrap()
                .iter()
                .map(|(tag, points)| {
                    let points = points
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| {
                            (
                                p[0].as_i64().unwrap(),
                                p[1].as_f64().unwrap(),
                                p[2].as_f64().unwrap(),
                            )
                        })
                        .collect();
                    (tag.clone(), points)
                })
                .collect();
            (run.clone(), tags)
        })
        .collect()
}

fn metrics_rows(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// TensorBoard stores scalars as f32 (and JSON parsing may move the last
/// bit of a double).
fn same_f32(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1e-6)
}

#[test]
fn tensorboard_reads_pretraining_probe_and_finetuning_logs_even_across_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 80, 32, 4);
    let run = dir.path().join("run");
    let pretrain = |extra: &[&str]| {
        tiny_pretrain(&geo, &run)
            .args([
                "--method",
                "moco-tp-geo",
                "--epochs",
                "3",
                "--knn-every",
                "1",
            ])
            .args(extra)
            .assert()
            .success();
    };
    // Two epochs, then a resume: the event file is rebuilt from the metrics
    // log, so no point is lost or doubled.
    pretrain(&["--stop-after", "2"]);
    pretrain(&["--resume"]);
    geossl()
        .args(["probe", "--epochs", "4", "--cache-features", "--checkpoint"])
        .arg(&run)
        .arg("--manifest")
        .arg(&geo)
        .assert()
        .success();
    let classifier = run.join("classifier");
    geossl()
        .args(["finetune", "--epochs", "2", "--checkpoint"])
        .arg(&run)
        .arg("--manifest")
        .arg(&geo)
        .arg("--out")
        .arg(&classifier)
        .assert()
        .success();

    let logs = tensorboard_scalars(&run.join("tb"));
    assert_eq!(logs.keys().collect::<Vec<_>>(), ["pretrain", "probe"]);
    let pre = &logs["pretrain"];
    let rows = metrics_rows(&run);
    let steps: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "step").collect();
    let epochs: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "epoch").collect();
    assert_eq!(epochs.len(), 3);
    for (tag, field) in [
        ("step/loss", "loss"),
        ("step/infonce", "moco_loss"),
        ("step/geo_ce", "geo_loss"),
        ("step/geo_acc", "geo_acc"),
        ("step/lr", "lr"),
    ] {
        let points = &pre[tag];
        assert_eq!(points.len(), steps.len(), "{tag}: one point per step");
        for (p, row) in points.iter().zip(&steps) {
            assert_eq!(p.0, row["step"].as_i64().unwrap(), "{tag}");
            let time = row["time"].as_f64().unwrap();
            assert!(
                (p.1 - time).abs() < 1e-3,
                "{tag}: wall time {} vs {time}",
                p.1
            );
            assert!(
                same_f32(p.2, row[field].as_f64().unwrap()),
                "{tag} {p:?} vs {row}"
            );
        }
    }
    let knn = &pre["epoch/knn_top1"];
    assert_eq!(knn.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3]);
    for (p, row) in knn.iter().zip(&epochs) {
        assert!(same_f32(p.2, row["knn_top1"].as_f64().unwrap()));
    }
    assert_eq!(pre["epoch/infonce"].len(), 3);
    assert_eq!(pre["epoch/pairs_per_s"].len(), 3);

    let probe = &logs["probe"];
    assert_eq!(
        probe["probe/train_loss"]
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(probe["probe/train_loss"]
        .iter()
        .all(|p| p.2.is_finite() && p.2 > 0.0));
    let report = json(&run.join("probe.json"));
    assert!(same_f32(
        probe["probe/test_top1"][0].2,
        report["top1"].as_f64().unwrap()
    ));
    assert!(same_f32(
        probe["probe/test_per_location_top1"][0].2,
        report["per_location"]["top1"].as_f64().unwrap()
    ));

    let fine = &tensorboard_scalars(&classifier.join("tb"))["finetune"];
    assert_eq!(fine["finetune/train_loss"].len(), 2);
    assert_eq!(fine["finetune/lr"].len(), 2);
    let report = json(&classifier.join("report.json"));
    assert!(same_f32(
        fine["finetune/test_top1"][0].2,
        report["top1"].as_f64().unwrap()
    ));
}

/// Where the browser test leaves its screenshots.
fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts")
        .join("report")
}

/// `manifest` with each location's dates pulled towards the earliest
/// date, so that the longest time span of a location is just under four
/// years: the time-span histogram then has 16 bins of a quarter year, whose
/// labels ("3.75-4") are wider than their bars.
fn squeeze_time_spans(manifest: &Path, out: &Path) {
    use chrono::{DateTime, Utc};
    let mut reader = csv::Reader::from_path(manifest).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (time, location) = (col("timestamp"), col("location_id"));
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let parse = |r: &csv::StringRecord| r[time].parse::<DateTime<Utc>>().unwrap();
    let mut spans: BTreeMap<&str, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for r in &records {
        let t = parse(r);
        let e = spans.entry(&r[location]).or_insert((t, t));
        *e = (e.0.min(t), e.1.max(t));
    }
    let longest = spans.values().map(|(a, b)| *b - *a).max().unwrap();
    let earliest = records.iter().map(parse).min().unwrap();
    let scale = 3.9 * 365.25 * 86400.0 / longest.num_seconds() as f64;
    let mut w = csv::Writer::from_path(out).unwrap();
    w.write_record(&headers).unwrap();
    for r in &records {
        let offset = (parse(r) - earliest).num_seconds() as f64 * scale;
        let t = earliest + chrono::Duration::seconds(offset as i64);
        let mut fields: Vec<String> = r.iter().map(str::to_string).collect();
        fields[time] = t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        w.write_record(&fields).unwrap();
    }
    w.flush().unwrap();
}

/// Layout faults of every chart of a page as the browser drew it: texts
/// overlapping each other, texts or legends over a line chart's data, and
/// fractional ticks on the axes (`counted`) that count epochs or steps.
fn layout_faults(page: &str, result: &Value, counted: &[&str]) -> Vec<String> {
    let mut faults = Vec::new();
    for c in result["charts"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        for (what, key) in [
            ("texts overlap", "text_overlaps"),
            ("text over the data", "text_over_data"),
            ("legend over the data", "legend_over_data"),
        ] {
            if !c[key].as_array().unwrap().is_empty() {
                faults.push(format!("{page}/{id}: {what}: {}", c[key]));
            }
        }
        let fractional: Vec<&Value> = c["x_ticks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t.as_str().unwrap().contains('.'))
            .collect();
        if counted.contains(&id) && !fractional.is_empty() {
            faults.push(format!(
                "{page}/{id}: fractional ticks on a count axis: {fractional:?}"
            ));
        }
    }
    faults
}

#[test]
fn reports_load_in_a_headless_browser_without_errors_and_every_chart_has_data() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 80, 32, 4);
    let tp_geo = dir.path().join("moco-tp-geo");
    // Two launches (the second a --resume): the page lists both.
    for extra in [&["--stop-after", "1"][..], &["--resume"]] {
        tiny_pretrain(&geo, &tp_geo)
            .args([
                "--method",
                "moco-tp-geo",
                "--epochs",
                "2",
                "--knn-every",
                "1",
            ])
            .args(extra)
            .assert()
            .success();
    }
    for eval in ["probe", "knn"] {
        let mut c = geossl();
        c.arg(eval)
            .arg("--checkpoint")
            .arg(&tp_geo)
            .arg("--manifest")
            .arg(&geo);
        if eval == "probe" {
            c.args(["--epochs", "3", "--cache-features"]);
        }
        c.assert().success();
    }
    // A classifier fine-tuned into the run folder is an evaluation too.
    geossl()
        .args(["finetune", "--epochs", "1", "--checkpoint"])
        .arg(&tp_geo)
        .arg("--manifest")
        .arg(&geo)
        .arg("--out")
        .arg(tp_geo.join("classifier"))
        .assert()
        .success();
    let moco = dir.path().join("moco");
    tiny_pretrain(&geo, &moco)
        .args(["--method", "moco", "--epochs", "1"])
        .assert()
        .success();
    for run in [&tp_geo, &moco] {
        geossl().arg("report").arg(run).assert().success();
    }
    let compare = dir.path().join("compare.html");
    geossl()
        .arg("report")
        .arg(&tp_geo)
        .arg(&moco)
        .arg("--out")
        .arg(&compare)
        .assert()
        .success();
    // Data moved away: the report still comes, saying what is missing.
    let moved = dir.path().join("moved.html");
    geossl()
        .arg("report")
        .arg(&moco)
        .args(["--manifest", "nowhere/manifest.csv", "--out"])
        .arg(&moved)
        .assert()
        .success();
    let page = std::fs::read_to_string(&moved).unwrap();
    assert!(
        page.contains("nowhere/manifest.csv") && page.contains("pass --manifest"),
        "the note names the manifest"
    );
    assert!(!page.contains("id=\"map\""), "no map without data");
    // Many narrow bins: their labels must stand apart all the same.
    let squeezed = dir.path().join("squeezed.csv");
    squeeze_time_spans(&geo, &squeezed);
    let spans = dir.path().join("spans.html");
    geossl()
        .arg("report")
        .arg(&tp_geo)
        .arg("--manifest")
        .arg(&squeezed)
        .args(["--pairs", "0", "--out"])
        .arg(&spans)
        .assert()
        .success();
    // A page with a console error, a script exception and a missing image:
    // the checker must see all three, or its silence below means nothing.
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        "<!DOCTYPE html><html><head><title>broken</title></head><body><img src=\"missing.png\" alt=\"x\"><script>console.error('deliberate'); notDefined();</script></body></html>",
    )
    .unwrap();

    let shots = artifacts();
    let _ = std::fs::remove_dir_all(&shots);
    let pages = [
        ("moco-tp-geo", tp_geo.join("report.html")),
        ("moco", moco.join("report.html")),
        ("comparison", compare.clone()),
        ("spans", spans.clone()),
        ("broken", broken.clone()),
    ];
    let mut args = vec![shots.into_os_string()];
    for (name, page) in &pages {
        let mut arg = std::ffi::OsString::from(format!("{name}="));
        arg.push(page);
        args.push(arg);
    }
    let results: Value = serde_json::from_str(&run_python("browser_check.py", args)).unwrap();
    let result = |name: &str| &results[name];

    // The layout first, all pages at once: what a reader would see wrong.
    let run_counts = ["loss", "pretext-accuracy", "lr", "knn", "throughput"];
    let compared = ["infonce", "geo-ce", "knn", "moco-acc", "lr"];
    let mut faults = Vec::new();
    for (page, counted) in [
        ("moco-tp-geo", &run_counts[..]),
        ("moco", &run_counts[..]),
        ("comparison", &compared[..]),
        ("spans", &run_counts[..]),
    ] {
        faults.extend(layout_faults(page, result(page), counted));
    }
    assert!(faults.is_empty(), "layout faults:\n{}", faults.join("\n"));
    let span_chart = result("spans")["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "time-span")
        .unwrap();
    assert!(
        span_chart["texts"].as_u64().unwrap() >= 12,
        "the squeezed spans make many bins, labelled: {span_chart}"
    );

    // What pretraining recorded of its two launches.
    let record = json(&tp_geo.join("run.json"));
    let launches = record["launches"].as_array().unwrap();
    assert_eq!(launches.len(), 2, "{record}");
    for (l, (from, to, outcome)) in launches.iter().zip([
        (0, 1, "paused after 1 of 2 epochs (--stop-after)"),
        (1, 2, "finished"),
    ]) {
        assert_eq!(l["device"], "cpu");
        assert_eq!(l["world_size"], 1);
        assert_eq!(
            (l["start_epoch"].as_u64(), l["end_epoch"].as_u64()),
            (Some(from), Some(to))
        );
        assert_eq!(l["outcome"], outcome);
        let args: Vec<&str> = l["command_line"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[1], "pretrain", "{args:?}");
        assert!(args.contains(&"moco-tp-geo"), "{args:?}");
        assert!(l["started"].as_str().unwrap() <= l["updated"].as_str().unwrap());
    }

    let control = result("broken");
    let problems = control["problems"].to_string();
    assert!(problems.contains("deliberate"), "{problems}");
    assert!(problems.contains("Uncaught"), "{problems}");
    assert!(problems.contains("missing.png"), "{problems}");
    assert_eq!(control["images"][0]["decoded"], false);

    let expect_charts = |page: &str, ids: &[&str]| {
        let r = result(page);
        assert_eq!(
            r["problems"].as_array().unwrap().len(),
            0,
            "{page}: {}",
            r["problems"]
        );
        let charts = r["charts"].as_array().unwrap();
        let found: Vec<&str> = charts.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(found, ids, "{page}");
        for c in charts {
            assert!(c["points"].as_u64().unwrap() > 0, "{page}: {c}");
            assert!(c["marks"].as_u64().unwrap() >= 2, "{page}: {c}");
            assert!(c["width"].as_f64().unwrap() >= 300.0, "{page}: {c}");
            assert!(c["height"].as_f64().unwrap() >= 200.0, "{page}: {c}");
        }
        let images = r["images"].as_array().unwrap();
        assert!(
            images.iter().all(|i| i["decoded"] == true),
            "{page}: {images:?}"
        );
        let shot = PathBuf::from(r["screenshot"].as_str().unwrap());
        let png = image::open(&shot).unwrap();
        assert_eq!(png.width(), 1280);
        assert!(png.height() as f64 >= r["page_height"].as_f64().unwrap().min(16000.0) - 1.0);
        r
    };
    let full = expect_charts(
        "moco-tp-geo",
        &[
            "loss",
            "pretext-accuracy",
            "lr",
            "knn",
            "throughput",
            "confusion",
            "map",
            "views-per-location",
            "time-span",
        ],
    );
    assert_eq!(
        full["sections"].as_array().unwrap().len(),
        6,
        "provenance, training, evaluation, data, pairs, configuration: {}",
        full["sections"]
    );
    // How the run was made, as the page shows it.
    let made = full["section_text"]["provenance"].as_str().unwrap();
    for fact in [
        "Wall time of pretraining",
        "in 2 launch(es), on cpu",
        "--stop-after 1",
        "--resume",
        "paused after 1 of 2 epochs",
        "finished",
        "Images skipped: pretraining replaced 0 unreadable image(s)",
        "linear probe left out 0 unreadable row(s)",
        "kNN left out 0 unreadable row(s)",
        "fine-tuned (classifier) left out 0 unreadable row(s)",
    ] {
        assert!(made.contains(fact), "{fact:?} not in:\n{made}");
    }
    let evaluation = full["section_text"]["evaluation"].as_str().unwrap();
    assert!(evaluation.contains("checkpoint evaluated"), "{evaluation}");
    assert!(
        evaluation.contains("fine-tuned (classifier)"),
        "{evaluation}"
    );
    assert_eq!(
        evaluation.matches("checkpoints/epoch-0002").count(),
        3,
        "probe, kNN and the fine-tuned classifier name the checkpoint they read: {evaluation}"
    );
    let loss = &full["charts"][0];
    assert_eq!(loss["id"], "loss");
    assert!(
        loss["legend"].as_array().unwrap().contains(&Value::from(
            "geo CE at chance: ln 4 = 1.386 (4 geo classes)"
        )),
        "the chance line of 4 geo clusters: {}",
        loss["legend"]
    );
    // 8 query/key pairs.
    assert_eq!(full["images"].as_array().unwrap().len(), 16);
    // Without kNN monitor, probe or knn: those charts make way for notes.
    expect_charts(
        "moco",
        &[
            "loss",
            "pretext-accuracy",
            "lr",
            "throughput",
            "map",
            "views-per-location",
            "time-span",
        ],
    );
    let cmp = expect_charts(
        "comparison",
        &["infonce", "geo-ce", "knn", "moco-acc", "lr", "probe-top1"],
    );
    assert_eq!(
        cmp["links"].as_array().unwrap().len(),
        2,
        "links to both run reports: {}",
        cmp["links"]
    );
}
