//! The packed product on Intel AMX tiles, with f32 accuracy from bfloat16 pieces.
//!
//! An AMX core multiplies bfloat16 tiles at about fourteen times the rate of its f32
//! fused multiply-adds (3.2 TFLOP/s against 230 GFLOP/s on one core of the Xeon guest the
//! README's figures come from), accumulating in f32. bfloat16 keeps 8 significant bits of
//! an f32's 24, so the operands are split into pieces whose sum is exact, and the pieces'
//! products (each exact in f32: 8 x 8 bits) are accumulated:
//!
//! - each input value `x = x_hi + x_mid + x_lo`, three bfloat16s by truncation (the
//!   24 significant bits, 8 at a time; exact unless `|x| < 2^-110`, where bfloat16
//!   subnormals start and AMX reads them as zero);
//! - each f16 weight `w = w_hi + w_lo` (its 11 significant bits: 8, then 3), a bfloat16
//!   weight is its own `w_hi`.
//!
//! `x w` is then `x_hi w_hi + x_mid w_hi + x_lo w_hi + x_hi w_lo + x_mid w_lo`, dropping only
//! `x_lo w_lo`, at most `2^-24 |x w|`: below the rounding of the f32 product the other
//! kernels form. Five tile products (three for bfloat16 weights) per block of the output,
//! so the arithmetic rate is still about three times the f32 one, and the result is the
//! f32 product up to the order of the additions, like every other kernel here.
//!
//! The weight stays in the f16 (or bfloat16) panels of [`super::packed`]; each panel is
//! split into tiles when a product uses it, so a decoding step reads two bytes per weight
//! from memory as before. Inputs are split once per call.

// The kernel is x86-64 only; elsewhere `available` is false and the constants idle.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
use std::cell::RefCell;

/// Whether AMX products run: the CPU has AMX-TILE and AMX-BF16, the kernel granted this
/// process the tile state, and `LATENTEVO_AMX=0` (which keeps the AVX-512 packed product,
/// for comparisons) is not set.
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var("LATENTEVO_AMX").map_or(true, |v| v != "0") && super::matmul::available() && detected()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detected() -> bool {
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaf 7 exists on every CPU with AVX-512F (checked by the caller).
    let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    // Linux hands out the 8 KiB tile state only to processes that ask for it.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detected() -> bool {
    false
}

/// A panel element the tiles can take: f16 (split into two bfloat16 pieces) or bfloat16
/// (one piece).
pub(crate) trait TileElement: Copy {
    /// Whether the weight has a low piece (`w_lo`).
    const SPLIT: bool;
    /// Sixteen columns at steps `kk` and `kk + 1` of `k` as a row of a B tile (the pairs
    /// interleaved: step `kk` in the low half of each 32-bit lane): `(hi, lo)`; a null
    /// `odd` reads as zeros.
    ///
    /// # Safety
    /// AVX-512F; `even` (and `odd` where not null) hold sixteen readable values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile_row(
        even: *const Self,
        odd: *const Self,
    ) -> (std::arch::x86_64::__m512i, std::arch::x86_64::__m512i);
}

#[cfg(target_arch = "x86_64")]
mod elements {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::TileElement;

    impl TileElement for f16 {
        const SPLIT: bool = true;
        #[inline(always)]
        unsafe fn tile_row(even: *const f16, odd: *const f16) -> (__m512i, __m512i) {
            // SAFETY: the caller's contract.
            unsafe {
                let load = |p: *const f16| {
                    if p.is_null() {
                        _mm512_setzero_ps()
                    } else {
                        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
                    }
                };
                let (e, o) = (load(even), load(odd));
                let top = _mm512_set1_epi32(0xffff_0000u32 as i32);
                let e_hi = _mm512_and_si512(_mm512_castps_si512(e), top);
                let o_hi = _mm512_and_si512(_mm512_castps_si512(o), top);
                // Exact: the 3 bits of an f16's 11 that the high piece leaves, which a
                // bfloat16 holds (the f32's low 16 bits are zero).
                let e_lo = _mm512_castps_si512(_mm512_sub_ps(e, _mm512_castsi512_ps(e_hi)));
                let o_lo = _mm512_castps_si512(_mm512_sub_ps(o, _mm512_castsi512_ps(o_hi)));
                (
                    _mm512_or_si512(_mm512_srli_epi32::<16>(e_hi), o_hi),
                    _mm512_or_si512(_mm512_srli_epi32::<16>(e_lo), o_lo),
                )
            }
        }
    }

    impl TileElement for bf16 {
        const SPLIT: bool = false;
        #[inline(always)]
        unsafe fn tile_row(even: *const bf16, odd: *const bf16) -> (__m512i, __m512i) {
            // SAFETY: the caller's contract.
            unsafe {
                let load = |p: *const bf16| {
                    if p.is_null() {
                        _mm512_setzero_si512()
                    } else {
                        _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i))
                    }
                };
                let pair = _mm512_or_si512(load(even), _mm512_slli_epi32::<16>(load(odd)));
                (pair, _mm512_setzero_si512())
            }
        }
    }
}

/// Fewest input rows for which the tiles run: a tile holds 16 rows, and with 8 the
/// AVX-512 packed product was faster (one core, 8 x 3072 x 576: 153 against 127
/// GFLOP/s; 16 rows: 164 against 245).
pub(crate) const MIN_ROWS: usize = 12;

/// Rows per work item of a product of many rows on tiles (see
/// [`super::packed::PackedWeight::row_chunk`]).
pub(crate) const ROW_CHUNK: usize = 256;

/// Row tiles from which a whole panel is split into tiles once and read back from L2 by
/// every row tile, rather than split block by block per row tile (the prompt pass's
/// experts: 0.78 s against 1.03 s with 256-row items). With two row tiles the ring
/// stays faster: a work item's first panel is split before any product can hide it,
/// and the decoding step's items hold few panels (round decode 2.28 against 2.10 s).
const WHOLE_PANEL_ROW_TILES: usize = 3;

/// An AMX tile configuration (`ldtilecfg` / `sttilecfg`'s 64-byte operand).
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

#[cfg(target_arch = "x86_64")]
impl TileConfig {
    /// No configuration (palette 0): what `sttilecfg` stores when none is loaded.
    const NONE: TileConfig = TileConfig {
        palette: 0,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [0; 16],
        rows: [0; 16],
    };

    /// Palette 1, eight tiles of 16 rows x 64 bytes: 0-2 the outputs of a panel's column
    /// tiles, 3-4 input pieces, 5-7 weight pieces.
    const OURS: TileConfig = TileConfig {
        palette: 1,
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
        ..TileConfig::NONE
    };
}

/// Rows of a tile, and output columns of one (16 f32).
const TILE: usize = 16;
/// Steps of `k` per tile product (32 bfloat16s, 64 bytes a row).
const TILE_K: usize = 32;
/// Column tiles per panel.
const PANEL_TILES: usize = super::packed::PANEL / TILE;
/// bfloat16s in one tile.
const TILE_LEN: usize = TILE * TILE_K;

/// One 64-byte row of a tile: tile loads that straddle two cache lines run at half the
/// rate (1.1 against 1.9 TFLOP/s of tile products here).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

/// A zeroed buffer of `len` bfloat16s (a multiple of 32) aligned to 64 bytes, reusing `v`.
#[cfg(target_arch = "x86_64")]
fn aligned(v: &mut Vec<Line>, len: usize) -> *mut u16 {
    v.clear();
    v.resize(len / 32, Line([0; 32]));
    v.as_mut_ptr() as *mut u16
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Per thread: the split inputs, a panel's B tiles, and a row tile's outputs.
    static SCRATCH: RefCell<(Vec<Line>, Vec<Line>, Vec<f32>)> = const {
        RefCell::new((Vec::new(), Vec::new(), Vec::new()))
    };
}

/// `dst[r * dst_stride + j - c0] = sum_kk x[r * k + kk] * w[j * k + kk]` for `r < m` and
/// the columns `c0..c1` (`c0` a multiple of the panel width) of the panels at `panels`
/// (laid out as [`super::packed`] says), single-threaded.
///
/// # Safety
/// [`available`]; `x` holds `m * k` values, `panels` the panels up to column `c1`, `dst`
/// `(m - 1) * dst_stride + c1 - c0` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn matmul<E: TileElement>(
    dst: &mut [f32],
    dst_stride: usize,
    x: &[f32],
    panels: *const E,
    m: usize,
    k: usize,
    (c0, c1): (usize, usize),
) {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::packed::PANEL;

    let row_tiles = m.div_ceil(TILE);
    let k_blocks = k.div_ceil(TILE_K);
    let k_pad = k_blocks * TILE_K;
    let piece = row_tiles * TILE * k_pad;
    SCRATCH.with_borrow_mut(|(inputs, tiles, out)| {
        // The inputs' pieces: [hi | mid | lo], each [row_tiles * 16, k_pad], zero-padded.
        let inputs = aligned(inputs, 3 * piece);
        let top = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let narrow = |v: __m512i| _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(v));
        for r in 0..m {
            let row = x.as_ptr().add(r * k);
            let mut kk = 0;
            while kk < k {
                let mask: __mmask16 = if k - kk >= 16 {
                    0xffff
                } else {
                    ((1u32 << (k - kk)) - 1) as __mmask16
                };
                let v = _mm512_maskz_loadu_ps(mask, row.add(kk));
                let hi = _mm512_and_si512(_mm512_castps_si512(v), top);
                let rest = _mm512_sub_ps(v, _mm512_castsi512_ps(hi));
                let mid = _mm512_and_si512(_mm512_castps_si512(rest), top);
                let lo = _mm512_and_si512(
                    _mm512_castps_si512(_mm512_sub_ps(rest, _mm512_castsi512_ps(mid))),
                    top,
                );
                let at = inputs.add(r * k_pad + kk);
                for (p, v) in [hi, mid, lo].into_iter().enumerate() {
                    _mm256_storeu_si256(at.add(p * piece) as *mut __m256i, narrow(v));
                }
                kk += 16;
            }
        }
        out.resize(TILE * PANEL, 0.0);

        // Other code on this thread may keep its own tile configuration loaded between
        // calls (candle's quantised Q4_K product configures each thread once), so the one
        // in place is saved here and put back at the end.
        let mut previous = TileConfig::NONE;
        asm!("sttilecfg [{}]", in(reg) &mut previous as *mut TileConfig, options(nostack));
        asm!("ldtilecfg [{}]", in(reg) &TileConfig::OURS as *const TileConfig, options(nostack, readonly));

        let input_stride = k_pad * 2;
        // Many row tiles: each panel is split into tiles once, while the products of the
        // one before run, and every row tile reads them back from L2 (one core, 256 x
        // 3072 x 576: 384 -> 485 GFLOP/s against splitting before the products; 256 x
        // 576 x 1536: 296 -> 351 with the row tiles in groups). Few row tiles (decoding
        // steps): blocks of `k` go through a small ring in L1, a later block (of this row
        // tile, the next one, or the next panel) split pair of rows by pair of rows
        // between the tile products of this one, so that the vector ports split while the
        // tile unit multiplies (split before its products, a block ran at 259 cycles per
        // 512 weights, one row tile, one core; interleaved, 184-197). The hardware
        // prefetchers fetch the next panel: software prefetches into L2 slowed the
        // interleaved loop (235 against 184 cycles hot, 8.0 against 9.5 GB/s from memory).
        let whole_panel = row_tiles >= WHOLE_PANEL_ROW_TILES;
        let tiles = aligned(tiles, if whole_panel { 2 * k_blocks } else { RING } * BLOCK_LEN);
        if whole_panel {
            // Two panels' tiles: the products read one while the next panel is split
            // into the other, one pair of rows every `group` steps of the products, so
            // the split is spread evenly over the panel's products. The row tiles go in
            // groups whose input pieces stay in L2 (see `GROUP_INPUT_BYTES`).
            let panel_len = k_blocks * BLOCK_LEN;
            let buffer = |p: usize| tiles.add((p % 2) * panel_len);
            let units = TILE * k_blocks;
            let most = (GROUP_INPUT_BYTES / (3 * TILE * k_pad * 2)).max(2);
            let groups = row_tiles.div_ceil(most);
            let per_group = row_tiles.div_ceil(groups);
            for first in (0..row_tiles).step_by(per_group) {
                let tiles_here = first..(first + per_group).min(row_tiles);
                let group = tiles_here.len();
                for unit in 0..units {
                    weight_rows(
                        panels.add(c0 * k),
                        k,
                        unit / TILE,
                        unit % TILE,
                        buffer(0).add(unit / TILE * BLOCK_LEN),
                    );
                }
                let (mut c, mut p) = (c0, 0);
                while c < c1 {
                    let next = (c + PANEL < c1).then(|| (panels.add((c + PANEL) * k), buffer(p + 1)));
                    let (mut unit, mut countdown) = (0, 0);
                    for rt in tiles_here.clone() {
                        asm!(
                            "tilezero tmm0",
                            "tilezero tmm1",
                            "tilezero tmm2",
                            options(nostack, nomem)
                        );
                        for b in 0..k_blocks {
                            let a = inputs.add(rt * TILE * k_pad + b * TILE_K);
                            block_products::<E>(a, piece, input_stride, buffer(p).add(b * BLOCK_LEN), |_| {
                                if let Some((panel, w)) = next {
                                    if countdown == 0 {
                                        let b = unit / TILE;
                                        weight_rows(panel, k, b, unit % TILE, w.add(b * BLOCK_LEN));
                                        unit += 1;
                                        countdown = group;
                                    }
                                    countdown -= 1;
                                }
                            });
                        }
                        let rows = (m - rt * TILE).min(TILE);
                        store_outputs(
                            dst,
                            dst_stride,
                            out,
                            (c - c0, (c1 - c).min(PANEL)),
                            rt * TILE,
                            rows,
                        );
                    }
                    debug_assert!(next.is_none() || unit == units);
                    c += PANEL;
                    p += 1;
                }
            }
        } else {
            // The blocks in the order the products take them: (panel column, row tile,
            // block of `k`). Each is split into its slot of the ring `SPLIT_AHEAD` blocks
            // before its products, so its stores have reached L1 when the tile loads read
            // it (tile loads do not take data from pending stores: one block ahead ran at
            // 214-229 cycles per 512 weights against 184-197 with two or three).
            let after = |(c, rt, b): (usize, usize, usize)| {
                if b + 1 < k_blocks {
                    Some((c, rt, b + 1))
                } else if rt + 1 < row_tiles {
                    Some((c, rt + 1, 0))
                } else if c + PANEL < c1 {
                    Some((c + PANEL, 0, 0))
                } else {
                    None
                }
            };
            let slot = |i: usize| tiles.add(i * BLOCK_LEN);
            let mut ahead = Some((c0, 0, 0));
            let mut ahead_slot = 0;
            for _ in 0..SPLIT_AHEAD {
                if let Some((c, rt, b)) = ahead {
                    (0..TILE).for_each(|pair| weight_rows(panels.add(c * k), k, b, pair, slot(ahead_slot)));
                    ahead = after((c, rt, b));
                    ahead_slot = (ahead_slot + 1) % RING;
                }
            }
            let (mut current, mut current_slot) = (Some((c0, 0, 0)), 0);
            while let Some((c, rt, b)) = current {
                if b == 0 {
                    asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        options(nostack, nomem)
                    );
                }
                let a = inputs.add(rt * TILE * k_pad + b * TILE_K);
                let split = ahead.map(|(c, _, b)| (panels.add(c * k), b, slot(ahead_slot)));
                block_products::<E>(a, piece, input_stride, slot(current_slot), |pair| {
                    if let Some((panel, b, w)) = split {
                        weight_rows(panel, k, b, pair, w);
                    }
                });
                if b + 1 == k_blocks {
                    let rows = (m - rt * TILE).min(TILE);
                    store_outputs(
                        dst,
                        dst_stride,
                        out,
                        (c - c0, (c1 - c).min(PANEL)),
                        rt * TILE,
                        rows,
                    );
                }
                current = after((c, rt, b));
                current_slot = (current_slot + 1) % RING;
                ahead = ahead.and_then(after);
                ahead_slot = (ahead_slot + 1) % RING;
            }
        }
        if previous.palette == 0 {
            asm!("tilerelease", options(nostack, nomem));
        } else {
            asm!("ldtilecfg [{}]", in(reg) &previous as *const TileConfig, options(nostack, readonly));
        }
    });
}

/// Bytes of input pieces a group of row tiles may take in the two-panel path, so that
/// they stay in L2 beside the panels' tiles while every panel passes over them.
const GROUP_INPUT_BYTES: usize = 1 << 20;

/// Blocks a product of few row tiles splits ahead of the one it multiplies.
const SPLIT_AHEAD: usize = 2;
/// Slots of the ring those blocks go through.
const RING: usize = SPLIT_AHEAD + 1;

/// bfloat16s of one block of `k` of a panel's tiles: per column tile, its high and low
/// pieces.
const BLOCK_LEN: usize = PANEL_TILES * 2 * TILE_LEN;

/// Splits steps `32 b + 2 pair` and `32 b + 2 pair + 1` of `k` (zeros past `k`) of the
/// panel at `panel` into row `pair` of the block's B tiles at `w`: column tile `t`'s high
/// piece at `w + 2 t` tiles, its low piece (f16 weights only) one tile after. A block is
/// its sixteen pairs.
///
/// # Safety
/// AVX-512F; `panel` holds `k` rows of [`super::packed::PANEL`] values; `w` has room for
/// [`BLOCK_LEN`] values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn weight_rows<E: TileElement>(panel: *const E, k: usize, b: usize, pair: usize, w: *mut u16) {
    use std::arch::x86_64::*;

    use super::packed::PANEL;

    let kk = b * TILE_K + 2 * pair;
    let row = |kk: usize| {
        if kk < k {
            panel.add(kk * PANEL)
        } else {
            std::ptr::null()
        }
    };
    let (even, odd) = (row(kk), row(kk + 1));
    for t in 0..PANEL_TILES {
        let at = w.add(2 * t * TILE_LEN + pair * 32) as *mut __m512i;
        let (hi, lo) = if even.is_null() {
            (_mm512_setzero_si512(), _mm512_setzero_si512())
        } else {
            let odd_t = if odd.is_null() { odd } else { odd.add(t * TILE) };
            E::tile_row(even.add(t * TILE), odd_t)
        };
        _mm512_store_si512(at, hi);
        if E::SPLIT {
            _mm512_store_si512(at.add(TILE_LEN / 32), lo);
        }
    }
}

/// Tile instructions over one block: the input's pieces at `{hi}`, `{mid}`, `{lo}` (rows
/// `{s}` bytes apart), the weight's B tiles at `{w}` (rows `{b}` = 64 bytes apart).
#[cfg(target_arch = "x86_64")]
macro_rules! tile_ops {
    ($a:expr, $piece:expr, $stride:expr, $w:expr; $($op:literal),+) => {
        std::arch::asm!(
            $($op,)+
            "/* {hi} {mid} {lo} {w} {s} {b} */",
            hi = in(reg) $a,
            mid = in(reg) $a.add($piece),
            lo = in(reg) $a.add(2 * $piece),
            w = in(reg) $w,
            s = in(reg) $stride,
            b = in(reg) 64usize,
            options(nostack, readonly),
        )
    };
}

/// The tile products of one block of `k` into tiles 0-2 (the panel's three column
/// tiles): the input's high, low and middle pieces (`a`, `a + 2 piece`, `a + piece`,
/// rows `stride` bytes apart) against the weight's high pieces at `w`, then its high and
/// middle pieces against the weight's low pieces (f16 weights). `between(pair)` runs for
/// the sixteen pairs in turn, spread between the tile instructions: a later block's
/// split, which runs on the vector ports while the tile unit works (on one core of the
/// README's Xeon, a block's split and products alone took 204 cycles per 512 weights one
/// after the other and 136 interleaved; in the product, 259 -> 184-197).
///
/// # Safety
/// Tiles configured as [`matmul`] does; `a`'s pieces hold 16 rows of 32 values, `w` a
/// block of tiles as [`weight_rows`] writes it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_products<E: TileElement>(
    a: *const u16,
    piece: usize,
    stride: usize,
    w: *const u16,
    mut between: impl FnMut(usize),
) {
    tile_ops!(a, piece, stride, w; "tileloadd tmm3, [{hi} + {s}*1]", "tileloadd tmm5, [{w} + {b}*1]", "tdpbf16ps tmm0, tmm3, tmm5");
    between(0);
    tile_ops!(a, piece, stride, w; "tileloadd tmm6, [{w} + {b}*1 + 2048]", "tdpbf16ps tmm1, tmm3, tmm6");
    between(1);
    tile_ops!(a, piece, stride, w; "tileloadd tmm7, [{w} + {b}*1 + 4096]", "tdpbf16ps tmm2, tmm3, tmm7");
    between(2);
    tile_ops!(a, piece, stride, w; "tileloadd tmm4, [{lo} + {s}*1]", "tdpbf16ps tmm0, tmm4, tmm5");
    between(3);
    tile_ops!(a, piece, stride, w; "tdpbf16ps tmm1, tmm4, tmm6");
    between(4);
    tile_ops!(a, piece, stride, w; "tdpbf16ps tmm2, tmm4, tmm7");
    between(5);
    tile_ops!(a, piece, stride, w; "tileloadd tmm4, [{mid} + {s}*1]", "tdpbf16ps tmm0, tmm4, tmm5");
    between(6);
    tile_ops!(a, piece, stride, w; "tdpbf16ps tmm1, tmm4, tmm6");
    between(7);
    tile_ops!(a, piece, stride, w; "tdpbf16ps tmm2, tmm4, tmm7");
    between(8);
    if E::SPLIT {
        tile_ops!(a, piece, stride, w; "tileloadd tmm5, [{w} + {b}*1 + 1024]", "tdpbf16ps tmm0, tmm3, tmm5");
        between(9);
        tile_ops!(a, piece, stride, w; "tileloadd tmm6, [{w} + {b}*1 + 3072]", "tdpbf16ps tmm1, tmm3, tmm6");
        between(10);
        tile_ops!(a, piece, stride, w; "tileloadd tmm7, [{w} + {b}*1 + 5120]", "tdpbf16ps tmm2, tmm3, tmm7");
        between(11);
        tile_ops!(a, piece, stride, w; "tdpbf16ps tmm0, tmm4, tmm5");
        between(12);
        tile_ops!(a, piece, stride, w; "tdpbf16ps tmm1, tmm4, tmm6");
        between(13);
        tile_ops!(a, piece, stride, w; "tdpbf16ps tmm2, tmm4, tmm7");
        between(14);
    } else {
        (9..15).for_each(&mut between);
    }
    between(15);
}

/// Stores tiles 0-2 (rows `r0..r0 + rows` of the output, columns `col..col + valid`) into
/// `dst`: directly when the tile is whole, else through `out` (`16 x PANEL`).
///
/// # Safety
/// Tiles configured as [`matmul`] does; `dst` holds those rows and columns.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_outputs(
    dst: &mut [f32],
    dst_stride: usize,
    out: &mut [f32],
    (col, valid): (usize, usize),
    r0: usize,
    rows: usize,
) {
    use std::arch::asm;

    use super::packed::PANEL;

    let target = dst.as_mut_ptr().add(r0 * dst_stride + col);
    let whole = rows == TILE && valid == PANEL;
    let (at, stride) = if whole {
        (target, dst_stride * 4)
    } else {
        (out.as_mut_ptr(), PANEL * 4)
    };
    asm!(
        "tilestored [{d} + {s}*1], tmm0",
        "tilestored [{d} + {s}*1 + 64], tmm1",
        "tilestored [{d} + {s}*1 + 128], tmm2",
        d = in(reg) at,
        s = in(reg) stride,
        options(nostack),
    );
    if !whole {
        for r in 0..rows {
            std::ptr::copy_nonoverlapping(out.as_ptr().add(r * PANEL), target.add(r * dst_stride), valid);
        }
    }
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};

    use crate::kernels::packed::{PackedWeight, Storage};

    /// Full 24-bit mantissas over six orders of magnitude, signs mixed.
    fn input(m: usize, k: usize) -> Vec<f32> {
        (0..m * k)
            .map(|i| {
                let i = i as f32;
                (i * 0.7).sin() * (3.0 * (i * 1.3).cos()).exp() * 0.1
            })
            .collect()
    }

    fn weight(n: usize, k: usize, storage: Storage) -> Vec<f32> {
        (0..n * k)
            .map(|i| {
                let v = ((i as f32) * 0.37).cos() * (2.0 * (i as f32 * 0.11).sin()).exp() * 0.05;
                match storage {
                    Storage::F16 => f16::from_f32(v).to_f32(),
                    _ => bf16::from_f32(v * 1e6).to_f32(),
                }
            })
            .collect()
    }

    /// candle's quantised Q4_K product keeps its own tile configuration loaded on each
    /// thread between calls (and runs part of its work on the calling thread); a tile
    /// product of ours in between must leave it in place. Before it did, the second
    /// candle call ended in an illegal-instruction fault.
    #[test]
    fn leaves_other_tile_users_configured() {
        use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
        use candle_core::{Device, Module, Tensor};
        if !super::available() {
            eprintln!("no AMX here: nothing to test");
            return;
        }
        let (m, n, k) = (32, 64, 512);
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let q = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q4K).unwrap()).unwrap();
        let before = q
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let xs = input(m, 576);
        let packed = PackedWeight::pack(&weight(48, 576, Storage::F16), 48, 576);
        let mut out = vec![0f32; m * 48];
        packed.matmul(&mut out, 48, &xs, m, 0..1);
        let after = q
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(before, after);
    }

    /// The tile product against an f64 reference, for every path (one row tile, a few,
    /// a whole panel per call) and tails of rows, columns and `k`. The bound, 1e-6 of
    /// the sum of the terms' magnitudes, is what f32 accumulation meets; an input split
    /// into two bfloat16 pieces instead of three (16 bits) misses it by an order of
    /// magnitude.
    #[test]
    fn matches_an_f64_product() {
        if !super::available() {
            eprintln!("no AMX here: nothing to test");
            return;
        }
        for (m, n, k) in [
            (12, 50, 33),
            (16, 48, 64),
            (20, 100, 16),
            (32, 49, 32),
            (17, 100, 40),
            (31, 96, 577),
            (48, 7, 1),
            (64, 130, 100),
            (300, 97, 129),
            (256, 48, 1536),
        ] {
            for storage in [Storage::F16, Storage::Bf16] {
                let x = input(m, k);
                let w = weight(n, k, storage);
                let packed = PackedWeight::pack(&w, n, k);
                assert_eq!(packed.storage(), storage);
                assert!(packed.on_tiles(m), "{m} rows should run on tiles");
                let got = packed.matmul_parallel(&x, m);
                for r in 0..m {
                    for j in 0..n {
                        let terms = (0..k).map(|kk| x[r * k + kk] as f64 * w[j * k + kk] as f64);
                        let want: f64 = terms.clone().sum();
                        let magnitude: f64 = terms.map(f64::abs).sum();
                        let diff = (got[r * n + j] as f64 - want).abs();
                        assert!(
                            diff <= 1e-6 * magnitude.max(1e-30),
                            "{m}x{n}x{k} {storage:?} [{r}, {j}]: {} vs {want} (terms {magnitude})",
                            got[r * n + j]
                        );
                    }
                }
            }
        }
    }
}
