//! Downstream evaluation of pretrained encoders, as in the paper: linear
//! probe on frozen features, fine-tuning, weighted kNN, per-location
//! (temporal) classification, embeddings for other tools, and the demo that
//! compares the four variants with the paper's baselines.

pub mod classification;
pub mod demo;
pub mod embed;
pub mod encoder;
pub mod features;
pub mod finetune;
pub mod knn;
pub mod probe;
pub mod task;

pub use classification::ClassificationReport;
pub use encoder::Encoder;
pub use task::{Target, Task};
