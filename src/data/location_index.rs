//! Images grouped by place: the structure temporal positives are drawn from.
//!
//! Every manifest row belongs to one location (its `location_id`, or itself
//! when the manifest has none). Within a location the views are sorted by
//! timestamp (undated views last, then manifest order), so "the other views
//! of image i" is a slice lookup plus one skipped index: O(1).

use std::collections::HashMap;

use super::manifest::Manifest;

#[derive(Debug, Clone)]
pub struct Location {
    /// The `location_id` shared by its views (the path when there is none).
    pub id: String,
    /// Manifest row indices of its views, oldest first.
    pub views: Vec<usize>,
}

impl Location {
    /// Years between its first and last dated view, when it has two or more.
    pub fn time_span_years(&self, manifest: &Manifest) -> Option<f64> {
        // Views are sorted by time, dated ones first.
        let mut dated = self
            .views
            .iter()
            .filter_map(|&r| manifest.records[r].timestamp);
        let first = dated.next()?;
        Some(first.years_until(dated.next_back()?))
    }
}

#[derive(Debug, Clone)]
pub struct LocationIndex {
    pub locations: Vec<Location>,
    /// For each manifest row: (location index, rank among that location's views).
    slot: Vec<(u32, u32)>,
}

impl LocationIndex {
    pub fn build(manifest: &Manifest) -> Self {
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut locations: Vec<Location> = Vec::new();
        for (row, r) in manifest.records.iter().enumerate() {
            let Some(id) = r.location_id.as_deref() else {
                locations.push(Location {
                    id: r.path.clone(),
                    views: vec![row],
                });
                continue;
            };
            let li = *by_id.entry(id).or_insert_with(|| {
                locations.push(Location {
                    id: id.to_string(),
                    views: Vec::new(),
                });
                locations.len() - 1
            });
            locations[li].views.push(row);
        }
        let mut slot = vec![(0u32, 0u32); manifest.records.len()];
        for (li, loc) in locations.iter_mut().enumerate() {
            // Stable sort: undated views after dated ones, ties in manifest order.
            loc.views.sort_by_key(|&row| {
                let t = manifest.records[row].timestamp;
                (t.is_none(), t)
            });
            for (rank, &row) in loc.views.iter().enumerate() {
                slot[row] = (li as u32, rank as u32);
            }
        }
        Self { locations, slot }
    }

    pub fn len(&self) -> usize {
        self.locations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Index of the location a manifest row belongs to.
    pub fn location_of(&self, row: usize) -> usize {
        self.slot[row].0 as usize
    }

    /// All views (rows) of the location of `row`, oldest first, `row` included.
    pub fn views_of(&self, row: usize) -> &[usize] {
        &self.locations[self.location_of(row)].views
    }

    /// Number of OTHER views of the location of `row`.
    pub fn other_view_count(&self, row: usize) -> usize {
        self.views_of(row).len() - 1
    }

    /// The `n`-th other view of the location of `row` (0 <= n < other_view_count),
    /// skipping `row` itself; with a uniform `n` this is a uniform other view.
    pub fn other_view(&self, row: usize, n: usize) -> usize {
        let (li, rank) = self.slot[row];
        let views = &self.locations[li as usize].views;
        let i = if n >= rank as usize { n + 1 } else { n };
        views[i]
    }

    /// The other views of the location of `row`, oldest first.
    pub fn other_views(&self, row: usize) -> impl Iterator<Item = usize> + '_ {
        self.views_of(row)
            .iter()
            .copied()
            .filter(move |&r| r != row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text.as_bytes(), "m.csv", Path::new(".")).unwrap()
    }

    #[test]
    fn groups_and_sorts_by_time() {
        let m = manifest(
            "path,location_id,timestamp\n\
             a2,A,2016-01-01\n\
             b1,B,2015-01-01\n\
             a1,A,2014-06-01\n\
             a3,A,\n\
             a0,A,2013-01-01\n",
        );
        let idx = LocationIndex::build(&m);
        assert_eq!(idx.len(), 2);
        let a = &idx.locations[idx.location_of(0)];
        assert_eq!(a.id, "A");
        let names: Vec<&str> = a
            .views
            .iter()
            .map(|&r| m.records[r].path.as_str())
            .collect();
        assert_eq!(names, vec!["a0", "a1", "a2", "a3"]);
        assert_eq!(idx.views_of(1), &[1]);
        assert_eq!(idx.other_view_count(1), 0);
        // A: 2013-01-01 to 2016-01-01, the undated view ignored; B: one view.
        let span = a.time_span_years(&m).unwrap();
        assert!((span - 3.0).abs() < 0.01, "{span}");
        assert_eq!(idx.locations[idx.location_of(1)].time_span_years(&m), None);
        // Other views of a1 (row 2): a0, a2, a3 in time order, never a1 itself.
        let others: Vec<usize> = (0..idx.other_view_count(2))
            .map(|n| idx.other_view(2, n))
            .collect();
        assert_eq!(others, vec![4, 0, 3]);
        assert_eq!(idx.other_views(2).collect::<Vec<_>>(), others);
        for row in 0..m.records.len() {
            for n in 0..idx.other_view_count(row) {
                let o = idx.other_view(row, n);
                assert_ne!(o, row);
                assert_eq!(idx.location_of(o), idx.location_of(row));
            }
        }
    }

    #[test]
    fn without_location_column_every_row_is_a_place() {
        let m = manifest("path\nx\nx\ny\n");
        let idx = LocationIndex::build(&m);
        assert_eq!(idx.len(), 3);
        assert!((0..3).all(|r| idx.other_view_count(r) == 0));
    }
}
