//! ResNet-18/34/50 with torchvision's exact structure and parameter names
//! (`conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
//! `layer1.0.downsample.0.weight`, ...), so weights map one-to-one onto
//! `torchvision.models.resnet*`. The classifier (`fc`) is not part of the
//! backbone: MoCo puts its projection head there (see [`super::heads`]).
//!
//! Two options for small images, off by default (the paper's network):
//! `width` scales every stage (64 -> 128 -> 256 -> 512 at width 64), and
//! `small_input` replaces the 7x7/2 stem and its max-pool with a 3x3/1 conv,
//! as is usual for 32-64 px inputs (CIFAR-style); it keeps the names.

use tch::nn::{self, ModuleT};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
}

impl Arch {
    fn blocks(self) -> [i64; 4] {
        match self {
            Arch::Resnet18 => [2, 2, 2, 2],
            Arch::Resnet34 | Arch::Resnet50 => [3, 4, 6, 3],
        }
    }

    fn bottleneck(self) -> bool {
        self == Arch::Resnet50
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
        }
    }
}

impl crate::settings::Choice for Arch {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (Arch::Resnet18, "resnet18", ""),
        (Arch::Resnet34, "resnet34", ""),
        (Arch::Resnet50, "resnet50", ""),
    ];
}
crate::settings::choice_by_name!(Arch);

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResNetConfig {
    pub arch: Arch,
    /// Channels of the first stage (torchvision: 64).
    pub width: i64,
    /// 3x3 stride-1 stem without max-pool, for small images.
    pub small_input: bool,
    /// Input channels C of `conv1` (the run's `InputSpec::channels()`):
    /// 3 for RGB, e.g. 13 for Sentinel-2. Configs written before
    /// multispectral input have none and mean 3.
    #[serde(default = "rgb_channels")]
    pub in_channels: i64,
}

fn rgb_channels() -> i64 {
    3
}

impl ResNetConfig {
    /// Size of the pooled feature (the input of `fc`): 512 or 2048 at width 64.
    pub fn feature_dim(&self) -> i64 {
        let last = self.width * 8;
        if self.arch.bottleneck() {
            last * 4
        } else {
            last
        }
    }
}

/// torchvision's initialisation: Kaiming normal (fan out, ReLU) for
/// convolutions; BN weight 1, bias 0 (tch's defaults).
fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

#[derive(Debug)]
struct Downsample {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    downsample: Option<Downsample>,
}

impl Block {
    fn new(p: nn::Path, c_in: i64, planes: i64, stride: i64, bottleneck: bool) -> Self {
        let expansion = if bottleneck { 4 } else { 1 };
        let c_out = planes * expansion;
        let convs = if bottleneck {
            vec![
                (
                    conv(&p / "conv1", c_in, planes, 1, 1, 0),
                    bn(&p / "bn1", planes),
                ),
                (
                    conv(&p / "conv2", planes, planes, 3, stride, 1),
                    bn(&p / "bn2", planes),
                ),
                (
                    conv(&p / "conv3", planes, c_out, 1, 1, 0),
                    bn(&p / "bn3", c_out),
                ),
            ]
        } else {
            vec![
                (
                    conv(&p / "conv1", c_in, planes, 3, stride, 1),
                    bn(&p / "bn1", planes),
                ),
                (
                    conv(&p / "conv2", planes, planes, 3, 1, 1),
                    bn(&p / "bn2", planes),
                ),
            ]
        };
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: conv(&p / "downsample" / 0, c_in, c_out, 1, stride, 0),
            bn: bn(&p / "downsample" / 1, c_out),
        });
        Self { convs, downsample }
    }

    /// In-place ReLU and residual add, as torchvision's blocks: BatchNorm's
    /// backward does not read its output, so overwriting it is safe and
    /// saves one activation-sized buffer per op.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.shallow_clone();
        let last = self.convs.len() - 1;
        for (i, (c, b)) in self.convs.iter().enumerate() {
            ys = ys.apply(c).apply_t(b, train);
            if i < last {
                let _ = ys.relu_();
            }
        }
        match &self.downsample {
            Some(d) => ys += xs.apply(&d.conv).apply_t(&d.bn, train),
            None => ys += xs,
        }
        let _ = ys.relu_();
        ys
    }
}

/// The backbone: input [N, C, H, W] normalised images (C =
/// `config.in_channels`), output the pooled [N, feature_dim] features.
#[derive(Debug)]
pub struct ResNet {
    pub config: ResNetConfig,
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<Block>>,
}

impl ResNet {
    /// torchvision's `resnet*()` with `conv1 = Conv2d(C, 64, 7, 2, 3,
    /// bias=False)` for C input channels (timm's `in_chans`). The Kaiming
    /// fan-out initialisation does not depend on C, and the parameters are
    /// created in the same order, so C = 3 draws exactly the RNG values of
    /// the three-channel network.
    pub fn new(p: &nn::Path, config: ResNetConfig) -> Self {
        let (w, c) = (config.width, config.in_channels);
        let conv1 = if config.small_input {
            conv(p / "conv1", c, w, 3, 1, 1)
        } else {
            conv(p / "conv1", c, w, 7, 2, 3)
        };
        let bn1 = bn(p / "bn1", w);
        let bottleneck = config.arch.bottleneck();
        let expansion = if bottleneck { 4 } else { 1 };
        let mut c_in = w;
        let mut layers = Vec::new();
        for (stage, &count) in config.arch.blocks().iter().enumerate() {
            let planes = w << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            let lp = p / format!("layer{}", stage + 1);
            let mut blocks = Vec::new();
            for b in 0..count {
                blocks.push(Block::new(
                    &lp / b,
                    c_in,
                    planes,
                    if b == 0 { stride } else { 1 },
                    bottleneck,
                ));
                c_in = planes * expansion;
            }
            layers.push(blocks);
        }
        Self {
            config,
            conv1,
            bn1,
            layers,
        }
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.apply(&self.conv1).apply_t(&self.bn1, train);
        let _ = ys.relu_();
        if !self.config.small_input {
            ys = ys.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for layer in &self.layers {
            for block in layer {
                ys = block.forward_t(&ys, train);
            }
        }
        ys.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn count(vs: &nn::VarStore) -> i64 {
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    #[test]
    fn torchvision_names_and_sizes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ResNetConfig {
            arch: Arch::Resnet50,
            width: 64,
            small_input: false,
            in_channels: 3,
        };
        let net = ResNet::new(&vs.root(), cfg);
        let vars = vs.variables();
        for name in [
            "conv1.weight",
            "bn1.running_mean",
            "bn1.running_var",
            "layer1.0.conv3.weight",
            "layer1.0.downsample.0.weight",
            "layer1.0.downsample.1.bias",
            "layer4.2.bn3.weight",
        ] {
            assert!(vars.contains_key(name), "{name}");
        }
        assert_eq!(vars["layer4.2.conv3.weight"].size(), vec![2048, 512, 1, 1]);
        assert!(!vars.contains_key("layer1.1.downsample.0.weight"));
        // torchvision resnet50 has 25,557,032 parameters, 2,049,000 of them in fc.
        assert_eq!(count(&vs), 25_557_032 - 2_049_000);
        let out = net.forward_t(
            &Tensor::zeros([2, 3, 64, 64], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(out.size(), vec![2, 2048]);
        assert_eq!(cfg.feature_dim(), 2048);
    }

    #[test]
    fn resnet18_and_34_parameter_counts() {
        // torchvision: resnet18 11,689,512 and resnet34 21,797,672, fc 513,000.
        for (arch, total) in [(Arch::Resnet18, 11_689_512), (Arch::Resnet34, 21_797_672)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = ResNetConfig {
                arch,
                width: 64,
                small_input: false,
                in_channels: 3,
            };
            let _ = ResNet::new(&vs.root(), cfg);
            assert_eq!(count(&vs), total - 513_000, "{arch:?}");
            assert_eq!(cfg.feature_dim(), 512);
        }
    }

    #[test]
    fn small_variant_keeps_resolution_longer() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ResNetConfig {
            arch: Arch::Resnet18,
            width: 8,
            small_input: true,
            in_channels: 3,
        };
        let net = ResNet::new(&vs.root(), cfg);
        assert_eq!(vs.variables()["conv1.weight"].size(), vec![8, 3, 3, 3]);
        let out = net.forward_t(
            &Tensor::randn([3, 3, 16, 16], (Kind::Float, Device::Cpu)),
            true,
        );
        assert_eq!(out.size(), vec![3, 64]);
    }

    #[test]
    fn conv1_takes_c_channels_and_a_config_without_them_reads_as_three() {
        let build = |in_channels: i64, small_input: bool| {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = ResNetConfig {
                arch: Arch::Resnet18,
                width: 8,
                small_input,
                in_channels,
            };
            let net = ResNet::new(&vs.root(), cfg);
            (vs, net)
        };
        let (vs13, net13) = build(13, false);
        assert_eq!(vs13.variables()["conv1.weight"].size(), vec![8, 13, 7, 7]);
        let out = net13.forward_t(
            &Tensor::randn([2, 13, 32, 32], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(out.size(), vec![2, 64]);
        let (vs4, _) = build(4, true);
        assert_eq!(vs4.variables()["conv1.weight"].size(), vec![8, 4, 3, 3]);
        // Kaiming fan-out: conv1's spread does not depend on C.
        let std = |vs: &nn::VarStore| vs.variables()["conv1.weight"].std(true).double_value(&[]);
        let expected = (2.0f64 / (8.0 * 49.0)).sqrt();
        assert!((std(&vs13) / expected - 1.0).abs() < 0.1, "{}", std(&vs13));
        // C = 3 is the network as before: a config written before
        // in_channels existed reads as C = 3, the same config value, so
        // the same code builds the same network. (Not compared by seeding
        // libtorch's generator twice: it is global, and the other tests of
        // this binary draw from it at the same time.)
        let old: ResNetConfig =
            serde_json::from_str(r#"{"arch":"resnet18","width":8,"small_input":false}"#).unwrap();
        assert_eq!(
            old,
            ResNetConfig {
                arch: Arch::Resnet18,
                width: 8,
                small_input: false,
                in_channels: 3,
            }
        );
        let (vs3, _) = build(3, false);
        assert_eq!(vs3.variables()["conv1.weight"].size(), vec![8, 3, 7, 7]);
    }
}
