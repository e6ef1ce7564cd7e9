//! geossl: geography-aware self-supervised learning on satellite imagery.
//!
//! One module per concept:
//! - [`geo`]: coordinates on the sphere, WKT footprints, k-means on the
//!   sphere and its clusterings (centroids files);
//! - [`data`]: manifests, importers (fMoW, derived CSVs, GeoImageNet), the
//!   location index, geo classes, bounded decoding, augmentation, the pair
//!   loader, summaries, the synthetic dataset;
//! - [`model`]: devices, ResNet backbones, heads, MoCo and its key queue,
//!   named weights into variable stores, libtorch calls tch lacks
//!   (`torch_ext`); tensors in, tensors out;
//! - [`train`]: configuration, the run-folder layout, schedule, SGD,
//!   checkpoints, metrics, the epoch-monitor hook, pretraining;
//! - [`eval`]: linear probe, fine-tuning, kNN, per-location classification,
//!   embeddings;
//! - [`interop`]: exchange with the Python world (torchvision weights,
//!   PyTorch checkpoints);
//! - [`report`]: the HTML run report (charts, world map, sample pairs) and
//!   run comparisons (`geossl report`);
//! - [`demo`]: the four variants beside the baselines on the built-in
//!   dataset, end to end (`geossl demo`);
//! - [`dist`]: data-parallel runs on PyTorch's c10d: who this process is
//!   (torchrun, SLURM, `geossl pretrain --nproc`), process groups (Gloo;
//!   NCCL) and the collectives training needs;
//! - [`formats`]: the file formats every layer shares (atomic writes,
//!   `.npy`, `.safetensors` reading, TensorBoard event files, the
//!   classification report), at the bottom;
//! - [`progress`]: progress bars and lines, at the bottom;
//! - [`settings`]: how messages name a setting (a config field, or the
//!   CLI's flag), at the bottom;
//! - [`bench`]: benchmark inputs and timings (`geossl bench`);
//! - [`cli`]: the `geossl` command line, a thin layer over the above.
//!
//! The method is specified in `shared/docs/method.md` (Ayush et al., ICCV 2021).

pub mod bench;
pub mod cli;
pub mod data;
pub mod demo;
pub mod dist;
pub mod eval;
pub mod formats;
pub mod geo;
pub mod interop;
pub mod model;
pub mod progress;
pub mod report;
pub mod settings;
pub mod train;
