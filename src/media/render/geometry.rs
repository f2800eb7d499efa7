//! Plane geometry for the lower face's mesh: polylines read as `y(x)`, a point-in-polygon test
//! and the constrained Delaunay triangulation (spade) the mesh is drawn with.

use spade::{ConstrainedDelaunayTriangulation, Point2, Triangulation};

/// A polyline read as `y(x)`, its points sorted by `x`, level beyond its ends.
pub(super) struct Curve(Vec<[f32; 2]>);

impl Curve {
    pub(super) fn new(mut line: Vec<[f32; 2]>) -> Self {
        line.sort_by(|a, b| a[0].total_cmp(&b[0]));
        Self(line)
    }

    #[inline]
    pub(super) fn at(&self, x: f32) -> f32 {
        let line = &self.0;
        if line.len() < 2 {
            return line.first().map_or(0.0, |p| p[1]);
        }
        let i = line.partition_point(|p| p[0] <= x).clamp(1, line.len() - 1);
        let (a, b) = (line[i - 1], line[i]);
        let t = ((x - a[0]) / (b[0] - a[0]).max(1e-3)).clamp(0.0, 1.0);
        a[1] + (b[1] - a[1]) * t
    }

    pub(super) fn first(&self) -> [f32; 2] {
        self.0[0]
    }

    pub(super) fn last(&self) -> [f32; 2] {
        self.0[self.0.len() - 1]
    }
}

/// Is `p` inside the polygon `poly` (even-odd)?
pub(super) fn inside(poly: &[[f32; 2]], p: [f32; 2]) -> bool {
    let mut odd = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[j]);
        if (a[1] > p[1]) != (b[1] > p[1])
            && p[0] < a[0] + (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1])
        {
            odd = !odd;
        }
        j = i;
    }
    odd
}

/// Triangles over `rest` (constrained Delaunay), each contour's consecutive points kept as edges.
pub(super) fn triangulate(rest: &[[f32; 2]], contours: [&[usize]; 2]) -> Option<Vec<[u32; 3]>> {
    let mut cdt = ConstrainedDelaunayTriangulation::<Point2<f64>>::new();
    // A point where another already is gets that one's handle: map handles back to the first.
    let mut ours = Vec::new();
    let mut handles = Vec::with_capacity(rest.len());
    for (i, p) in rest.iter().enumerate() {
        let handle = cdt.insert(Point2::new(p[0] as f64, p[1] as f64)).ok()?;
        if handle.index() == ours.len() {
            ours.push(i as u32);
        }
        handles.push(handle);
    }
    for contour in contours {
        for pair in contour.windows(2) {
            let (a, b) = (handles[pair[0]], handles[pair[1]]);
            if a != b {
                // An edge another contour already crosses is left out.
                cdt.try_add_constraint(a, b);
            }
        }
    }
    let triangles: Vec<[u32; 3]> = cdt
        .inner_faces()
        .map(|f| f.vertices().map(|v| ours[v.fix().index()]))
        .collect();
    (!triangles.is_empty()).then_some(triangles)
}
