//! A tiny anti-aliased rasteriser for top-down scenes: oriented rectangles,
//! ellipses, elliptic rings and thick segments in scene coordinates
//! ([0, 1]^2, y down), drawn onto a float RGB canvas through a per-view
//! transform (shift and zoom, i.e. misregistration and GSD changes).

/// Linear RGB in [0, 1].
pub type Rgb = [f32; 3];

pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

pub fn scale(a: Rgb, f: f32) -> Rgb {
    [a[0] * f, a[1] * f, a[2] * f]
}

#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Oriented box: centre, half extents, rotation (cos, sin).
    Rect {
        cx: f32,
        cy: f32,
        hw: f32,
        hh: f32,
        cos: f32,
        sin: f32,
    },
    Ellipse {
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
        cos: f32,
        sin: f32,
    },
    /// The band of width `thickness` centred on an ellipse's outline.
    Ring {
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
        thickness: f32,
        cos: f32,
        sin: f32,
    },
    /// A segment with round caps.
    Segment {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
        half_width: f32,
    },
}

impl Shape {
    pub fn rect(cx: f32, cy: f32, w: f32, h: f32, angle: f32) -> Self {
        Shape::Rect {
            cx,
            cy,
            hw: w / 2.0,
            hh: h / 2.0,
            cos: angle.cos(),
            sin: angle.sin(),
        }
    }

    pub fn ellipse(cx: f32, cy: f32, rx: f32, ry: f32, angle: f32) -> Self {
        Shape::Ellipse {
            cx,
            cy,
            rx,
            ry,
            cos: angle.cos(),
            sin: angle.sin(),
        }
    }

    pub fn ring(cx: f32, cy: f32, rx: f32, ry: f32, thickness: f32, angle: f32) -> Self {
        Shape::Ring {
            cx,
            cy,
            rx,
            ry,
            thickness,
            cos: angle.cos(),
            sin: angle.sin(),
        }
    }

    pub fn segment(x0: f32, y0: f32, x1: f32, y1: f32, width: f32) -> Self {
        Shape::Segment {
            x0,
            y0,
            x1,
            y1,
            half_width: width / 2.0,
        }
    }

    pub fn translated(self, dx: f32, dy: f32) -> Self {
        match self {
            Shape::Rect {
                cx,
                cy,
                hw,
                hh,
                cos,
                sin,
            } => Shape::Rect {
                cx: cx + dx,
                cy: cy + dy,
                hw,
                hh,
                cos,
                sin,
            },
            Shape::Ellipse {
                cx,
                cy,
                rx,
                ry,
                cos,
                sin,
            } => Shape::Ellipse {
                cx: cx + dx,
                cy: cy + dy,
                rx,
                ry,
                cos,
                sin,
            },
            Shape::Ring {
                cx,
                cy,
                rx,
                ry,
                thickness,
                cos,
                sin,
            } => Shape::Ring {
                cx: cx + dx,
                cy: cy + dy,
                rx,
                ry,
                thickness,
                cos,
                sin,
            },
            Shape::Segment {
                x0,
                y0,
                x1,
                y1,
                half_width,
            } => Shape::Segment {
                x0: x0 + dx,
                y0: y0 + dy,
                x1: x1 + dx,
                y1: y1 + dy,
                half_width,
            },
        }
    }

    /// Axis-aligned bounds (min x, min y, max x, max y) in scene units.
    fn bounds(&self) -> (f32, f32, f32, f32) {
        match *self {
            Shape::Rect {
                cx,
                cy,
                hw,
                hh,
                cos,
                sin,
            } => {
                let ex = (hw * cos).abs() + (hh * sin).abs();
                let ey = (hw * sin).abs() + (hh * cos).abs();
                (cx - ex, cy - ey, cx + ex, cy + ey)
            }
            Shape::Ellipse { cx, cy, rx, ry, .. } => {
                let r = rx.max(ry);
                (cx - r, cy - r, cx + r, cy + r)
            }
            Shape::Ring {
                cx,
                cy,
                rx,
                ry,
                thickness,
                ..
            } => {
                let r = rx.max(ry) + thickness;
                (cx - r, cy - r, cx + r, cy + r)
            }
            Shape::Segment {
                x0,
                y0,
                x1,
                y1,
                half_width,
            } => (
                x0.min(x1) - half_width,
                y0.min(y1) - half_width,
                x0.max(x1) + half_width,
                y0.max(y1) + half_width,
            ),
        }
    }

    /// Approximate signed distance (negative inside) in scene units.
    fn distance(&self, x: f32, y: f32) -> f32 {
        let local = |cx: f32, cy: f32, cos: f32, sin: f32| {
            let (dx, dy) = (x - cx, y - cy);
            (dx * cos + dy * sin, -dx * sin + dy * cos)
        };
        let ellipse = |u: f32, v: f32, rx: f32, ry: f32| {
            let k = ((u / rx).powi(2) + (v / ry).powi(2)).sqrt();
            (k - 1.0) * rx.min(ry)
        };
        match *self {
            Shape::Rect {
                cx,
                cy,
                hw,
                hh,
                cos,
                sin,
            } => {
                let (u, v) = local(cx, cy, cos, sin);
                let (qx, qy) = (u.abs() - hw, v.abs() - hh);
                let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
                outside + qx.max(qy).min(0.0)
            }
            Shape::Ellipse {
                cx,
                cy,
                rx,
                ry,
                cos,
                sin,
            } => {
                let (u, v) = local(cx, cy, cos, sin);
                ellipse(u, v, rx, ry)
            }
            Shape::Ring {
                cx,
                cy,
                rx,
                ry,
                thickness,
                cos,
                sin,
            } => {
                let (u, v) = local(cx, cy, cos, sin);
                ellipse(u, v, rx, ry).abs() - thickness / 2.0
            }
            Shape::Segment {
                x0,
                y0,
                x1,
                y1,
                half_width,
            } => {
                let (dx, dy) = (x1 - x0, y1 - y0);
                let len2 = (dx * dx + dy * dy).max(1e-12);
                let t = (((x - x0) * dx + (y - y0) * dy) / len2).clamp(0.0, 1.0);
                let (px, py) = (x0 + t * dx - x, y0 + t * dy - y);
                (px * px + py * py).sqrt() - half_width
            }
        }
    }
}

/// Where the view's pixels fall in the scene: a small shift
/// (misregistration) and a zoom (ground sampling distance).
#[derive(Debug, Clone, Copy)]
pub struct ViewTransform {
    pub shift_x: f32,
    pub shift_y: f32,
    pub zoom: f32,
}

pub struct Canvas {
    pub size: usize,
    pub pixels: Vec<Rgb>,
    view: ViewTransform,
}

impl Canvas {
    pub fn new(size: usize, view: ViewTransform, background: Rgb) -> Self {
        Self {
            size,
            pixels: vec![background; size * size],
            view,
        }
    }

    /// Scene coordinates of the centre of pixel (px, py).
    pub fn scene_of(&self, px: usize, py: usize) -> (f32, f32) {
        let s = self.size as f32;
        let v = self.view;
        (
            ((px as f32 + 0.5) / s - 0.5 - v.shift_x) / v.zoom + 0.5,
            ((py as f32 + 0.5) / s - 0.5 - v.shift_y) / v.zoom + 0.5,
        )
    }

    /// Size of one pixel in scene units.
    pub fn pixel_size(&self) -> f32 {
        1.0 / (self.size as f32 * self.view.zoom)
    }

    fn pixel_range(&self, lo: f32, hi: f32, shift: f32) -> (usize, usize) {
        let s = self.size as f32;
        let to_px = |v: f32| ((v - 0.5) * self.view.zoom + 0.5 + shift) * s - 0.5;
        let a = (to_px(lo) - 1.0).floor().max(0.0) as usize;
        let b = (to_px(hi) + 2.0).ceil().clamp(0.0, s) as usize;
        (a.min(self.size), b)
    }

    /// Calls `f(pixel, x, y, coverage)` for every pixel the shape covers,
    /// with anti-aliased coverage in (0, 1].
    fn for_each_covered(&mut self, shape: &Shape, mut f: impl FnMut(&mut Rgb, f32, f32, f32)) {
        let (x0, y0, x1, y1) = shape.bounds();
        let (pa, pb) = self.pixel_range(x0, x1, self.view.shift_x);
        let (qa, qb) = self.pixel_range(y0, y1, self.view.shift_y);
        let px_size = self.pixel_size();
        for py in qa..qb {
            for px in pa..pb {
                let (x, y) = self.scene_of(px, py);
                let coverage = (0.5 - shape.distance(x, y) / px_size).clamp(0.0, 1.0);
                if coverage > 0.0 {
                    f(&mut self.pixels[py * self.size + px], x, y, coverage);
                }
            }
        }
    }

    /// Blends `colour(x, y)` over the shape with anti-aliased coverage x `opacity`.
    pub fn paint(&mut self, shape: &Shape, opacity: f32, mut colour: impl FnMut(f32, f32) -> Rgb) {
        self.for_each_covered(shape, |p, x, y, coverage| {
            *p = mix(*p, colour(x, y), coverage * opacity)
        });
    }

    pub fn fill(&mut self, shape: &Shape, colour: Rgb) {
        self.paint(shape, 1.0, |_, _| colour);
    }

    /// Multiplies what is under the shape by `factor` (shadows).
    pub fn darken(&mut self, shape: &Shape, factor: f32) {
        self.for_each_covered(shape, |p, _, _, coverage| {
            *p = scale(*p, 1.0 - (1.0 - factor) * coverage)
        });
    }

    /// Applies `f(x, y, colour)` to every pixel.
    pub fn map(&mut self, mut f: impl FnMut(f32, f32, Rgb) -> Rgb) {
        for py in 0..self.size {
            for px in 0..self.size {
                let (x, y) = self.scene_of(px, py);
                let i = py * self.size + px;
                self.pixels[i] = f(x, y, self.pixels[i]);
            }
        }
    }

    /// 8-bit RGB, clamped.
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.pixels
            .iter()
            .flat_map(|p| p.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8))
            .collect()
    }
}

/// Smooth value noise in [-1, 1] at scene position (x, y), `freq` cells per
/// unit, for textures that stay put when the view shifts.
pub fn value_noise(x: f32, y: f32, freq: f32, seed: u32) -> f32 {
    let (fx, fy) = (x * freq, y * freq);
    let (ix, iy) = (fx.floor() as i32, fy.floor() as i32);
    let (tx, ty) = (fx - ix as f32, fy - iy as f32);
    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    let (sx, sy) = (smooth(tx), smooth(ty));
    let h = |i: i32, j: i32| lattice_hash(i, j, seed);
    let a = h(ix, iy) + (h(ix + 1, iy) - h(ix, iy)) * sx;
    let b = h(ix, iy + 1) + (h(ix + 1, iy + 1) - h(ix, iy + 1)) * sx;
    a + (b - a) * sy
}

fn lattice_hash(i: i32, j: i32, seed: u32) -> f32 {
    let mut h = (i as u32).wrapping_mul(0x8da6_b343)
        ^ (j as u32).wrapping_mul(0xd816_3841)
        ^ seed.wrapping_mul(0xcb1a_b31f);
    h ^= h >> 13;
    h = h.wrapping_mul(0x5bd1_e995);
    h ^= h >> 15;
    (h as f32 / u32::MAX as f32) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: ViewTransform = ViewTransform {
        shift_x: 0.0,
        shift_y: 0.0,
        zoom: 1.0,
    };

    #[test]
    fn rect_covers_its_area() {
        let mut c = Canvas::new(40, ID, [0.0; 3]);
        c.fill(&Shape::rect(0.5, 0.5, 0.5, 0.25, 0.0), [1.0; 3]);
        let lit: f32 = c.pixels.iter().map(|p| p[0]).sum();
        let expect = 0.5 * 0.25 * 1600.0;
        assert!((lit - expect).abs() < 5.0, "{lit} vs {expect}");
        // Rotation by 90 degrees swaps extents.
        let mut r = Canvas::new(40, ID, [0.0; 3]);
        r.fill(
            &Shape::rect(0.5, 0.5, 0.5, 0.25, std::f32::consts::FRAC_PI_2),
            [1.0; 3],
        );
        assert!(r.pixels[2 * 40 + 20][0] < 0.01 && r.pixels[12 * 40 + 20][0] > 0.99);
        assert!(c.pixels[20 * 40 + 12][0] > 0.99);
    }

    #[test]
    fn shift_moves_content() {
        let shifted = ViewTransform {
            shift_x: 0.25,
            shift_y: 0.0,
            zoom: 1.0,
        };
        let mut c = Canvas::new(40, shifted, [0.0; 3]);
        c.fill(&Shape::ellipse(0.25, 0.5, 0.05, 0.05, 0.0), [1.0; 3]);
        // Centre moves from x = 10 px to x = 20 px.
        assert!(c.pixels[20 * 40 + 20][0] > 0.99);
        assert!(c.pixels[20 * 40 + 10][0] < 0.01);
    }

    #[test]
    fn noise_is_bounded_and_deterministic() {
        for i in 0..100 {
            let v = value_noise(i as f32 * 0.037, i as f32 * 0.051, 8.0, 3);
            assert!((-1.0..=1.0).contains(&v));
            assert_eq!(v, value_noise(i as f32 * 0.037, i as f32 * 0.051, 8.0, 3));
        }
    }
}
