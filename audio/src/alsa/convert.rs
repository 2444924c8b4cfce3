//! Allocation-free helpers for the cpal callbacks: channel mapping between the
//! format SyncStream works in and the device's layout, and f32 ⇄ device samples.

use cpal::{FromSample, Sample};

/// Frames processed per inner step of a callback (the scratch buffers hold this
/// many frames, so callbacks of any size stay allocation-free).
pub(crate) const SCRATCH_FRAMES: usize = 4096;

/// Clamps to [−1, 1] and maps NaN to silence, so integer conversion never wraps.
#[inline]
pub(crate) fn sanitize(s: f32) -> f32 {
    if s.is_nan() {
        0.0
    } else {
        s.clamp(-1.0, 1.0)
    }
}

/// Writes `frames` frames of `src` (interleaved, `src_ch` channels, f32) into `dst`
/// (interleaved, `dst_ch` channels, device samples).
///
/// Channel mapping: with at least as many device channels as source channels the
/// source channels go to the first device channels and the rest are silent; with
/// fewer, device channel `d` gets the mean of the source channels `k` with
/// `k % dst_ch == d` (stereo to mono is the mean of left and right).
pub(crate) fn write_frames<T>(src: &[f32], src_ch: usize, dst: &mut [T], dst_ch: usize)
where
    T: Sample + FromSample<f32>,
{
    let frames = (src.len() / src_ch.max(1)).min(dst.len() / dst_ch.max(1));
    for f in 0..frames {
        let s = &src[f * src_ch..(f + 1) * src_ch];
        let d = &mut dst[f * dst_ch..(f + 1) * dst_ch];
        if dst_ch >= src_ch {
            for (c, out) in d.iter_mut().enumerate() {
                let v = if c < src_ch { sanitize(s[c]) } else { 0.0 };
                *out = T::from_sample(v);
            }
        } else {
            for (c, out) in d.iter_mut().enumerate() {
                let mut sum = 0.0f32;
                let mut n = 0u32;
                let mut k = c;
                while k < src_ch {
                    sum += s[k];
                    n += 1;
                    k += dst_ch;
                }
                *out = T::from_sample(sanitize(sum / n.max(1) as f32));
            }
        }
    }
}

/// Reads `dst.len() / dst_ch` frames of device samples `src` (interleaved,
/// `src_ch` channels) into `dst` (interleaved f32, `dst_ch` channels), with the
/// same channel mapping as [`write_frames`] (so a stereo device feeding a mono
/// microphone gives the mean of both channels).
pub(crate) fn read_frames<T>(src: &[T], src_ch: usize, dst: &mut [f32], dst_ch: usize)
where
    T: Sample,
    f32: FromSample<T>,
{
    let frames = (src.len() / src_ch.max(1)).min(dst.len() / dst_ch.max(1));
    for f in 0..frames {
        let s = &src[f * src_ch..(f + 1) * src_ch];
        let d = &mut dst[f * dst_ch..(f + 1) * dst_ch];
        if dst_ch >= src_ch {
            for (c, out) in d.iter_mut().enumerate() {
                // A mono device feeding a stereo consumer is duplicated.
                let k = if src_ch == 1 { 0 } else { c };
                *out = if k < src_ch {
                    f32::from_sample(s[k])
                } else {
                    0.0
                };
            }
        } else {
            for (c, out) in d.iter_mut().enumerate() {
                let mut sum = 0.0f32;
                let mut n = 0u32;
                let mut k = c;
                while k < src_ch {
                    sum += f32::from_sample(s[k]);
                    n += 1;
                    k += dst_ch;
                }
                *out = sum / n.max(1) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_to_i16_stereo_clamps() {
        let src = [0.5f32, -0.5, 2.0, f32::NAN];
        let mut dst = [0i16; 4];
        write_frames(&src, 2, &mut dst, 2);
        assert_eq!(dst[0], 16384);
        assert_eq!(dst[1], -16384);
        assert_eq!(dst[2], i16::MAX);
        assert_eq!(dst[3], 0);
    }

    #[test]
    fn stereo_to_more_channels_pads_with_silence() {
        let src = [0.25f32, -0.25];
        let mut dst = [1.0f32; 4];
        write_frames(&src, 2, &mut dst, 4);
        assert_eq!(dst, [0.25, -0.25, 0.0, 0.0]);
    }

    #[test]
    fn stereo_device_to_mono_is_the_mean() {
        let src = [0.5f32, 0.0, -0.2, -0.4];
        let mut dst = [0.0f32; 2];
        read_frames(&src, 2, &mut dst, 1);
        assert!((dst[0] - 0.25).abs() < 1e-6);
        assert!((dst[1] + 0.3).abs() < 1e-6);
    }

    #[test]
    fn i16_mono_device_to_stereo_duplicates() {
        let src = [16384i16, -16384];
        let mut dst = [0.0f32; 4];
        read_frames(&src, 1, &mut dst, 2);
        assert_eq!(dst, [0.5, 0.5, -0.5, -0.5]);
    }

    #[test]
    fn four_channels_fold_to_stereo() {
        let src = [0.1f32, 0.2, 0.3, 0.4];
        let mut dst = [0.0f32; 2];
        read_frames(&src, 4, &mut dst, 2);
        assert!((dst[0] - 0.2).abs() < 1e-6);
        assert!((dst[1] - 0.3).abs() < 1e-6);
    }
}
