//! 8-bit quantization of activations. A matrix product with quantized weights quantizes
//! its input once per call (as llama.cpp does) so that the inner loop is an integer dot
//! product: x ≈ d·q per block of 32, with s = d·Σq kept for formats that carry an offset.

use super::blocks::QK;

/// A vector (or a batch of vectors) quantized to 8 bits in blocks of 32.
#[derive(Default, Clone)]
pub struct Q8Act {
    pub qs: Vec<i8>,
    /// Scale of each block.
    pub d: Vec<f32>,
    /// d·Σq of each block.
    pub s: Vec<f32>,
}

impl Q8Act {
    /// Quantize `x`, whose length must be a multiple of 32 (checked by the caller's shapes).
    pub fn quantize(x: &[f32]) -> Self {
        let mut a = Self::default();
        a.quantize_into(x);
        a
    }

    pub fn quantize_into(&mut self, x: &[f32]) {
        debug_assert_eq!(x.len() % QK, 0);
        let nb = x.len() / QK;
        self.qs.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        for (b, blk) in x.chunks_exact(QK).enumerate() {
            let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in self.qs[b * QK..(b + 1) * QK].iter_mut().zip(blk) {
                *q = (v * id).round() as i8;
                sum += *q as i32;
            }
            self.d[b] = d;
            self.s[b] = d * sum as f32;
        }
    }

    /// Blocks `[from, to)`: one row of a batch.
    pub fn row(&self, row: usize, blocks_per_row: usize) -> Q8Row<'_> {
        let (b0, b1) = (row * blocks_per_row, (row + 1) * blocks_per_row);
        Q8Row {
            qs: &self.qs[b0 * QK..b1 * QK],
            d: &self.d[b0..b1],
            s: &self.s[b0..b1],
        }
    }
}

/// A borrowed view of one quantized vector.
#[derive(Clone, Copy)]
pub struct Q8Row<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_hand_checked() {
        // amax = 127 so d = 1 and every value rounds to itself.
        let mut x = vec![0f32; 32];
        x[0] = 127.0;
        x[1] = -3.0;
        x[2] = 2.4;
        let a = Q8Act::quantize(&x);
        assert_eq!(a.d, vec![1.0]);
        assert_eq!(&a.qs[..3], &[127, -3, 2]);
        assert_eq!(a.s, vec![126.0]);
    }

    #[test]
    fn zero_block_has_zero_scale() {
        let a = Q8Act::quantize(&[0f32; 64]);
        assert_eq!(a.d, vec![0.0, 0.0]);
        assert!(a.qs.iter().all(|&q| q == 0));
    }
}
