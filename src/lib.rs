//! geossl: geography-aware self-supervised learning on satellite imagery.
//!
//! One module per concept:
//! - [`geo`]: coordinates on the sphere, WKT footprints, k-means geo classes;
//! - [`data`]: manifests, importers (fMoW, derived CSVs, GeoImageNet), the
//!   location index, bounded decoding, augmentation, the pair loader,
//!   summaries, the synthetic dataset;
//! - [`model`]: devices, ResNet backbones, heads, MoCo;
//! - [`train`]: configuration, schedule, SGD, checkpoints, metrics, pretraining;
//! - [`eval`]: linear probe, fine-tuning, kNN, per-location classification,
//!   embeddings, and the four-variant demo;
//! - [`interop`]: exchange with the Python world (`.npy`, torchvision weights);
//! - [`report`]: the HTML run report (charts, world map, sample pairs) and
//!   run comparisons (`geossl report`);
//! - [`tensorboard`]: TensorBoard event files of pretraining, probe and
//!   fine-tuning;
//! - [`bench`]: benchmark inputs and timings (`geossl bench`);
//! - [`cli`]: the `geossl` command line, a thin layer over the above.
//!
//! The method is specified in `shared/docs/method.md` (Ayush et al., ICCV 2021).

pub mod atomic_write;
pub mod bench;
pub mod cli;
pub mod data;
pub mod eval;
pub mod geo;
pub mod interop;
pub mod model;
pub mod progress;
pub mod report;
pub mod tensorboard;
pub mod train;
