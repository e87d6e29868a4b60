//! Each plot writes a decodable PNG of the documented size; bad input does not panic; a
//! failed write leaves no file.

use std::fs::File;
use std::path::Path;

use latentevo_plot::{
    frontier_png, scatter_png, search_rounds_png, FrontierPlot, PlotError, RoundSummary, ScatterPlot, Series,
    PLOT_SIZE,
};

/// Decodes the PNG at `path`: (width, height, RGB bytes).
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Pixels of exactly `rgb`.
fn count_color(rgb: &[u8], color: (u8, u8, u8)) -> usize {
    rgb.chunks_exact(3)
        .filter(|p| (p[0], p[1], p[2]) == color)
        .count()
}

/// Non-white pixels in rows `y0..y1`.
fn inked_rows(width: u32, rgb: &[u8], y0: u32, y1: u32) -> usize {
    let row = width as usize * 3;
    rgb[y0 as usize * row..y1 as usize * row]
        .chunks_exact(3)
        .filter(|p| p != &[255, 255, 255])
        .count()
}

/// Decodes, checks the size, and returns the pixels.
fn check_png(path: &Path) -> Vec<u8> {
    let (w, h, rgb) = decode(path);
    assert_eq!((w, h), PLOT_SIZE);
    rgb
}

/// Files in `dir` (to catch leftover temporary files).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn rounds(n: usize) -> Vec<RoundSummary> {
    (0..n)
        .map(|r| RoundSummary {
            round: r,
            mean_reward: 0.2 + 0.1 * r as f64,
            max_reward: 0.4 + 0.1 * r as f64,
            diversity: 1.0 / (1.0 + r as f64),
        })
        .collect()
}

fn latents(n_rounds: usize, members: usize, dim: usize) -> Vec<Vec<Vec<f64>>> {
    (0..n_rounds)
        .map(|r| {
            (0..members)
                .map(|i| {
                    (0..dim)
                        .map(|j| ((r * 31 + i * 7 + j * 3) % 11) as f64 / (1.0 + r as f64))
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The colour of the last round in the PCA panel, and the first series' colour.
const DARK_ROUND: (u8, u8, u8) = (8, 48, 107);
const FIRST_SERIES: (u8, u8, u8) = (31, 119, 180);
const SECOND_SERIES: (u8, u8, u8) = (255, 127, 14);

#[test]
fn search_rounds_writes_a_png_with_both_panels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rounds.png");
    search_rounds_png(&path, &rounds(5), &latents(5, 12, 16), "five rounds").unwrap();
    let rgb = check_png(&path);
    // The last round's points (and its legend entry) are drawn in the darkest colour.
    assert!(count_color(&rgb, DARK_ROUND) > 50);
    // Mean reward line (orange) and title text are there.
    assert!(count_color(&rgb, SECOND_SERIES) > 100);
    assert!(inked_rows(PLOT_SIZE.0, &rgb, 0, 30) > 100);
    // Only the PNG is left in the directory.
    assert_eq!(entries(dir.path()), vec!["rounds.png"]);
}

#[test]
fn search_rounds_degenerate_shapes() {
    let dir = tempfile::tempdir().unwrap();
    type Case = (&'static str, Vec<RoundSummary>, Vec<Vec<Vec<f64>>>);
    let cases: Vec<Case> = vec![
        ("one_round.png", rounds(1), latents(1, 8, 4)),
        ("one_member.png", rounds(3), latents(3, 1, 4)),
        ("single_member_total.png", rounds(1), latents(1, 1, 8)),
        ("dim1.png", rounds(4), latents(4, 6, 1)),
        ("dim0.png", rounds(2), vec![vec![vec![]], vec![vec![]]]),
        ("no_latents.png", rounds(3), vec![]),
        ("empty_rounds.png", vec![], vec![]),
        ("empty_populations.png", rounds(2), vec![vec![], vec![]]),
        ("many_rounds.png", rounds(40), latents(40, 3, 8)),
    ];
    for (name, r, l) in cases {
        let path = dir.path().join(name);
        search_rounds_png(&path, &r, &l, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_png(&path);
    }
    // A single round at one point still shows the dark round colour.
    let rgb = check_png(&dir.path().join("one_member.png"));
    assert!(count_color(&rgb, DARK_ROUND) > 10);
}

#[test]
fn search_rounds_skips_non_finite_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rounds(4);
    r[1].mean_reward = f64::NAN;
    r[2].max_reward = f64::INFINITY;
    r[3].diversity = f64::NEG_INFINITY;
    let mut l = latents(4, 5, 6);
    l[0][0][2] = f64::NAN;
    l[3][4][0] = f64::INFINITY;
    let path = dir.path().join("nan.png");
    search_rounds_png(&path, &r, &l, "with NaN").unwrap();
    check_png(&path);

    // Everything non-finite: empty panels, still a PNG.
    let all_nan = vec![
        RoundSummary {
            round: 0,
            mean_reward: f64::NAN,
            max_reward: f64::NAN,
            diversity: f64::NAN,
        };
        2
    ];
    let l = vec![vec![vec![f64::NAN; 3]; 2]; 2];
    let path = dir.path().join("all_nan.png");
    search_rounds_png(&path, &all_nan, &l, "all NaN").unwrap();
    let rgb = check_png(&path);
    assert_eq!(count_color(&rgb, DARK_ROUND), 0);
}

#[test]
fn search_rounds_rejects_inconsistent_latents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    let err = search_rounds_png(&path, &rounds(3), &latents(2, 4, 4), "t").unwrap_err();
    assert!(
        matches!(
            err,
            PlotError::RoundCount {
                rounds: 3,
                latents: 2,
                ..
            }
        ),
        "{err}"
    );
    let mut l = latents(3, 4, 4);
    l[2][1].push(1.0);
    let err = search_rounds_png(&path, &rounds(3), &l, "t").unwrap_err();
    match &err {
        PlotError::LatentDimension {
            path: p,
            round,
            member,
            expected,
            found,
        } => {
            assert_eq!(p, &path);
            assert_eq!((*round, *member, *expected, *found), (2, 1, 4, 5));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("bad.png"), "{err}");
    assert!(entries(dir.path()).is_empty());
}

fn frontier() -> FrontierPlot {
    FrontierPlot {
        title: "diversity vs fluency".into(),
        x_label: "fluency".into(),
        y_label: "diversity".into(),
        series: vec![
            Series {
                name: "sampling".into(),
                points: vec![(0.9, 0.2), (0.6, 0.5), (0.8, 0.3)],
                labels: vec!["T=0.7".into(), "T=1.3".into(), "T=1.0".into()],
                connect: true,
            },
            Series {
                name: "latent search".into(),
                points: vec![(0.85, 0.45), (0.8, 0.55)],
                labels: vec![],
                connect: true,
            },
        ],
    }
}

#[test]
fn frontier_writes_a_png_with_lines_and_points() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frontier.png");
    frontier_png(&path, &frontier()).unwrap();
    let rgb = check_png(&path);
    // Lines make for many more series-coloured pixels than markers alone.
    let with_lines = count_color(&rgb, FIRST_SERIES);
    assert!(with_lines > 300, "{with_lines}");

    let mut unconnected = frontier();
    for s in &mut unconnected.series {
        s.connect = false;
    }
    let path2 = dir.path().join("points.png");
    frontier_png(&path2, &unconnected).unwrap();
    let points_only = count_color(&check_png(&path2), FIRST_SERIES);
    assert!(
        points_only > 50 && points_only < with_lines,
        "{points_only} vs {with_lines}"
    );
}

#[test]
fn scatter_draws_points_only() {
    let dir = tempfile::tempdir().unwrap();
    let plot = frontier();
    let scatter = ScatterPlot {
        title: plot.title.clone(),
        x_label: plot.x_label.clone(),
        y_label: plot.y_label.clone(),
        series: plot.series.clone(),
    };
    let path = dir.path().join("scatter.png");
    scatter_png(&path, &scatter).unwrap();
    let scatter_px = count_color(&check_png(&path), FIRST_SERIES);

    // `connect` is ignored: the same as a frontier with every series unconnected.
    let mut unconnected = plot;
    for s in &mut unconnected.series {
        s.connect = false;
    }
    let path2 = dir.path().join("frontier_points.png");
    frontier_png(&path2, &unconnected).unwrap();
    assert_eq!(scatter_px, count_color(&check_png(&path2), FIRST_SERIES));
    assert!(scatter_px > 50);
}

#[test]
fn xy_plots_handle_empty_and_non_finite_input() {
    let dir = tempfile::tempdir().unwrap();
    let cases = vec![
        ("no_series.png", vec![]),
        ("empty_series.png", vec![Series::default()]),
        (
            "all_nan.png",
            vec![Series {
                name: "nan".into(),
                points: vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)],
                labels: vec!["a".into(), "b".into()],
                connect: true,
            }],
        ),
        (
            "one_point.png",
            vec![Series {
                name: "one".into(),
                points: vec![(3.0, 3.0)],
                labels: vec!["x=3".into()],
                connect: true,
            }],
        ),
        (
            "huge.png",
            vec![Series {
                name: "huge".into(),
                points: vec![(-1e308, 1e308), (1e308, -1e308), (0.0, 0.0)],
                labels: vec![],
                connect: true,
            }],
        ),
        (
            "many_series.png",
            (0..25)
                .map(|i| Series {
                    name: format!("a rather long method name number {i} that gets cut"),
                    points: vec![(i as f64, (i * i) as f64)],
                    labels: vec![],
                    connect: false,
                })
                .collect(),
        ),
    ];
    for (name, series) in cases {
        let plot = FrontierPlot {
            title: name.into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: series.clone(),
        };
        let path = dir.path().join(name);
        frontier_png(&path, &plot).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_png(&path);
        let scatter = ScatterPlot {
            title: plot.title,
            x_label: plot.x_label,
            y_label: plot.y_label,
            series,
        };
        let path = dir.path().join(format!("scatter_{name}"));
        scatter_png(&path, &scatter).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_png(&path);
    }
    // The finite point of a partly-NaN series is still drawn.
    let path = dir.path().join("partial.png");
    let plot = FrontierPlot {
        series: vec![Series {
            name: "s".into(),
            points: vec![(f64::NAN, 0.0), (1.0, 2.0)],
            labels: vec![],
            connect: true,
        }],
        ..FrontierPlot::default()
    };
    frontier_png(&path, &plot).unwrap();
    assert!(count_color(&check_png(&path), FIRST_SERIES) > 30);
}

#[test]
fn label_count_mismatch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut plot = frontier();
    plot.series[1].labels = vec!["only one".into()];
    let path = dir.path().join("f.png");
    let err = frontier_png(&path, &plot).unwrap_err();
    assert!(
        matches!(&err, PlotError::LabelCount { series, labels: 1, points: 2, .. } if series == "latent search"),
        "{err}"
    );
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn missing_directory_is_a_typed_error_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no").join("such");
    let path = missing.join("plot.png");
    let errs = [
        frontier_png(&path, &frontier()).unwrap_err(),
        scatter_png(&path, &ScatterPlot::default()).unwrap_err(),
        search_rounds_png(&path, &rounds(2), &[], "t").unwrap_err(),
    ];
    for err in errs {
        match &err {
            PlotError::CreateFile { path: p, source } => {
                assert_eq!(p, &path);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }
    assert!(!missing.exists());
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn target_that_is_a_directory_fails_without_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("taken");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let err = frontier_png(&target, &frontier()).unwrap_err();
    assert!(
        matches!(&err, PlotError::WriteFile { path, .. } if path == &target),
        "{err}"
    );
    assert_eq!(entries(dir.path()), vec!["taken"]);
    assert_eq!(entries(&target), vec!["keep"]);
}

#[test]
fn rewriting_replaces_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.png");
    std::fs::write(&path, b"not a png").unwrap();
    scatter_png(&path, &ScatterPlot::default()).unwrap();
    check_png(&path);
    assert_eq!(entries(dir.path()), vec!["p.png"]);
}

#[test]
fn relative_path_without_directory_is_accepted() {
    // A bare file name is written in the current directory; use a unique name and clean up.
    let name = format!("latentevo-plot-test-{}.png", std::process::id());
    let path = Path::new(&name);
    let result = scatter_png(path, &ScatterPlot::default());
    let decoded = result.as_ref().ok().map(|_| decode(path));
    let _ = std::fs::remove_file(path);
    result.unwrap();
    assert_eq!(decoded.map(|d| (d.0, d.1)), Some(PLOT_SIZE));
}
