//! Training: configuration, learning-rate schedule, SGD, checkpoints,
//! metrics, one training step, the pretraining loop, and the layout of the
//! folders runs leave (run, checkpoint and classifier folders).

pub mod checkpoint;
pub mod config;
pub mod encoder_source;
pub mod launches;
pub mod metrics;
pub mod monitor;
pub mod pretrain;
pub mod run_dir;
pub mod schedule;
pub mod sgd;
pub mod step;

pub use config::{Method, PretrainConfig};
pub use monitor::{BuildMonitor, EpochMonitor};
pub use pretrain::{pretrain, RunOptions};
pub use run_dir::{CheckpointDir, ClassifierDir, RunDir};
