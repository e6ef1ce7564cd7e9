//! Downstream evaluation of pretrained encoders, as in the paper: linear
//! probe on frozen features, fine-tuning, weighted kNN, per-location
//! (temporal) classification and embeddings for other tools.

pub mod classification;
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
