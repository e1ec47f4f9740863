//! Key/value cache of one sequence. It grows as tokens arrive and can be truncated back
//! to any earlier position, which speculative decoding needs to drop rejected drafts.

/// Keys and values of every layer, position-major: `k[layer][pos * kv_dim + j]`.
#[derive(Clone, Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Width of each layer's K and V rows (layers may differ after head pruning).
    kv_dims: Vec<usize>,
    len: usize,
}

impl KvCache {
    pub fn new(kv_dims: Vec<usize>) -> Self {
        let n = kv_dims.len();
        Self {
            k: vec![Vec::new(); n],
            v: vec![Vec::new(); n],
            kv_dims,
            len: 0,
        }
    }

    /// Positions held (complete across all layers).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drop every position from `pos` on.
    pub fn truncate(&mut self, pos: usize) {
        if pos >= self.len {
            return;
        }
        for (l, &w) in self.kv_dims.iter().enumerate() {
            self.k[l].truncate(pos * w);
            self.v[l].truncate(pos * w);
        }
        self.len = pos;
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Append `k`, `v` rows for `layer` (several positions at once).
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        self.k[layer].extend_from_slice(k);
        self.v[layer].extend_from_slice(v);
    }

    /// Mark `n` new positions as complete once every layer has appended them. Layers that
    /// an early exit skipped are filled by the caller before this.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Positions stored for `layer` so far (≥ len while a forward pass is in progress).
    #[cfg(test)]
    pub(crate) fn layer_len(&self, layer: usize) -> usize {
        self.k[layer].len() / self.kv_dims[layer]
    }

    pub(crate) fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.k[layer], &self.v[layer])
    }

    pub fn n_layers(&self) -> usize {
        self.kv_dims.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_rolls_back_every_layer() {
        let mut c = KvCache::new(vec![2, 4]);
        c.append(0, &[1., 2., 3., 4.], &[5., 6., 7., 8.]);
        c.append(1, &[0.; 8], &[0.; 8]);
        c.advance(2);
        c.truncate(1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.layer(0).0, &[1., 2.]);
        assert_eq!(c.layer_len(1), 1);
        c.truncate(5); // beyond the end: no change
        assert_eq!(c.len(), 1);
    }
}
