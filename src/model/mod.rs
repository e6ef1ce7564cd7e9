//! Models on libtorch (through `tch`): where they run and, as the
//! pretraining work lands, the ResNet backbones, heads and MoCo.

pub mod device;

pub use device::{parse_device, DeviceSpec};
