//! Training: configuration, learning-rate schedule, SGD, checkpoints,
//! metrics, one training step, and the pretraining loop.

pub mod checkpoint;
pub mod config;
pub mod metrics;
pub mod monitor;
pub mod pretrain;
pub mod schedule;
pub mod sgd;
pub mod step;

pub use config::{Method, PretrainConfig};
pub use monitor::{BuildMonitor, EpochMonitor};
pub use pretrain::{pretrain, RunOptions};
