//! Exchange with the Python world: NumPy arrays for features and points,
//! weights in torchvision's layout, and published PyTorch checkpoints read
//! without running any of their code.

pub mod backbone;
pub mod export;
pub mod hub;
pub mod import;
pub mod model_card;
pub mod pickle;
pub mod torch_load;
