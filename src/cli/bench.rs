//! `bench`: the benchmark commands.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// k-means on geo-tag-like points (seeding + Lloyd).
    Kmeans {
        #[arg(long, default_value_t = 1_000_000)]
        points: usize,
        #[arg(long, default_value_t = 100)]
        k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Timed repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Also write the points as float64 .npy, e.g. for bench/kmeans_sklearn.py.
        #[arg(long)]
        dump_points: Option<PathBuf>,
    },
    /// One full pretraining step (MoCo-v2 + TP + Geo) on random inputs, as
    /// ../shared/bench/torch_reference.py times PyTorch's.
    Step(crate::bench::step::StepBenchConfig),
    /// The input pipeline: decode + two aug+ views + collation of every image
    /// of a manifest, as ../shared/bench/torch_data_reference.py.
    Data(crate::bench::data::DataBenchConfig),
}

pub(super) fn bench_cmd(b: BenchCommand) -> anyhow::Result<()> {
    match b {
        BenchCommand::Kmeans {
            points,
            k,
            seed,
            repeat,
            dump_points,
        } => {
            let pts = crate::bench::kmeans::geo_points(points, seed);
            if let Some(p) = dump_points {
                crate::bench::kmeans::write_npy(&p, &pts)?;
                println!("wrote {} points to {}", pts.len(), p.display());
            }
            let runs = crate::bench::kmeans::time_kmeans_repeated(&pts, k, seed, repeat)?;
            let median = &runs[runs.len() / 2];
            println!(
                "BENCH kmeans points={points} k={k} threads={} repeats={} median_s={:.3} min_s={:.3} iterations={} inertia={:.3}",
                rayon::current_num_threads(),
                runs.len(),
                median.seconds,
                runs[0].seconds,
                median.iterations,
                median.inertia
            );
            Ok(())
        }
        BenchCommand::Step(config) => {
            let t = crate::bench::step::run(&config)?;
            let c = &config;
            println!(
                "BENCH step arch={} batch={} size={} queue={} device={} amp={} channels_last={} threads={} loss={:.4} median_ms={:.1} min_ms={:.1} pairs_per_s={:.1} peak_rss_mib={:.0}",
                c.arch.name(),
                c.batch,
                c.size,
                c.queue,
                c.device,
                u8::from(c.amp),
                u8::from(c.channels_last),
                tch::get_num_threads(),
                t.last_loss,
                t.median_ms,
                t.min_ms,
                c.batch as f64 * 1e3 / t.median_ms,
                t.peak_rss_mib.unwrap_or(f64::NAN)
            );
            Ok(())
        }
        BenchCommand::Data(config) => {
            let t = crate::bench::data::run(&config)?;
            let c = &config;
            for b in &t.bad {
                tracing::warn!("skipped unreadable image: {}", b.error);
            }
            println!(
                "BENCH data threads={} size={} pre={} batch={} images={} bad_images={} seconds={:.2} pairs_per_s={:.1} pairs_per_s_per_thread={:.1}",
                rayon::current_num_threads(),
                c.size,
                t.pre,
                c.batch,
                t.pairs,
                t.bad.len(),
                t.seconds,
                t.pairs_per_s,
                t.pairs_per_s / rayon::current_num_threads() as f64
            );
            Ok(())
        }
    }
}
