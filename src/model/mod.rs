//! Models on libtorch (through `tch`): devices, the ResNet backbones with
//! torchvision's names, the MoCo heads, and MoCo itself.

pub mod device;
pub mod heads;
pub mod moco;
pub mod queue;
pub mod resnet;
pub mod torch_ext;
pub mod weights;

pub use device::{parse_device, DeviceSpec};
pub use moco::{Moco, MocoConfig, NonFiniteLoss};
pub use queue::KeyQueue;
pub use resnet::{Arch, ResNet, ResNetConfig};
