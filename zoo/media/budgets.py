"""What one input item may cost to decode, checked before anything is allocated: the one table of budgets
the door, the model, the demo and ``zoo embed`` all apply (docs/security.md quotes it).

The decoders read these names from this module at call time, so a test (or an operator) can change one
budget with ``monkeypatch.setattr(zoo.media.budgets, NAME, value)`` and every path sees it.
"""

from __future__ import annotations

# ---- text ---------------------------------------------------------------------------------------------------
#: characters of one text item a server accepts (the OpenAI door answers 400 beyond); in-process text is cut to
#: it. 1 Mi characters is ~250 pages, 2,000 times what the longest-reading model here (32k tokens) reads
MAX_TEXT_CHARS = 1 << 20
#: text is cut to ``max tokens x this`` characters before tokenizing: tokenizers average 3-6 characters a
#: token on prose and code, so 64 keeps every character a model could read (URLs, base64 and runs of spaces
#: included) while the tokenizer, which keeps what it cuts, never sees megabytes (~300 bytes of memory a char)
TOKENIZE_CHARS_PER_TOKEN = 64

# ---- interleaved --------------------------------------------------------------------------------------------
#: parts of one interleaved item: a page of a document is a few images and captions; every part is decoded and
#: goes through a tower, so the count bounds an item's work whatever each part costs
MAX_PARTS = 32

# ---- images -------------------------------------------------------------------------------------------------
#: pixels of one image, as its header declares (checked before decoding): 16.8 Mpx (4096 x 4096, a 16 Mpx
#: camera photo) while the towers read 768 px at most; a quarter of Pillow's own 64 Mpx-ish bomb warning
MAX_IMAGE_PIXELS = 1 << 24
#: bytes an image costs to decode, all copies alive at once: the decoded pixels in the file's mode (Pillow keeps
#: 1, 2 or 4 bytes a pixel), the RGB copy the towers take (4), and a progressive JPEG's coefficients (2 a
#: sample): 128 MiB is exactly 16 Mpx decoded as RGB, so a 1-bit PNG of 8000 x 8000 (7.8 KB, 305 MiB) is out
MAX_IMAGE_BYTES = 128 << 20
#: JPEG scans (SOS markers) in one file: every scan of a progressive JPEG is a pass over all its coefficients
#: (~30 ms at 16 Mpx); encoders write 1 (baseline) to ~10 (libjpeg, mozjpeg), a repeated-scan bomb thousands
MAX_JPEG_SCANS = 32
#: JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least this long: the
#: towers read 768 px at most, so a 4000 x 3000 photo decodes as 2000 x 1500 at a quarter of the memory and CPU
JPEG_DRAFT_SIDE = 1024
#: image formats Pillow may open (by content, never by name): the ones people send (JPEG covers MPO, a phone's
#: multi-picture JPEG); Pillow's other plugins (EPS via Ghostscript, PSD, ICNS, FITS …) are attack surface that
#: no embedding needs
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")

# ---- audio --------------------------------------------------------------------------------------------------
#: sample rates accepted, in Hz: 1 kHz is below any telephone rate; 768 kHz is the highest rate hi-res
#: recorders write. Outside this range a rate is a mistake or a bomb
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
#: a resampling ratio whose reduced terms ``p/q`` are both at most this (every common pair of rates is:
#: 16000/44100 = 160/441, 48000/44100 = 160/147) goes through torchaudio's sinc kernel, which then holds at
#: most ``p * (q + 2 * ceil(6 q / (0.99 min(p, q))))`` <= ``N**2 + 16 N`` values (~1 M, 8 MiB of float64 for
#: N = 1000); any other ratio (19997 Hz made torchaudio's kernel 16000 x 20000, 2.4 GiB) goes through FFmpeg's
#: swresample, whose filter bank is fixed (1024 phases) and exact in rate (see zoo.media.audio.resample)
MAX_RESAMPLE_TERMS = 1000
#: samples x channels read from one audio file at most (128 MiB of float32), whatever the model's window
MAX_AUDIO_VALUES = 1 << 25
#: audio is read this far past the model's window: resampling filters look a few samples ahead
RESAMPLE_MARGIN_S = 0.05

# ---- video --------------------------------------------------------------------------------------------------
#: containers FFmpeg may demux, chosen by the file's first bytes (see :mod:`zoo.media.video`), never by FFmpeg's
#: probe, which tries every demuxer: SDP (binds UDP ports), ffconcat and HLS (open other files and URLs)
VIDEO_CONTAINERS = ("mov", "matroska", "avi", "ogg", "mpegts")
#: frames decoded at most, whatever rate the file declares (2 fps x 300 s needs 600 sampled; 20,000 frames
#: covers a 300 s window at 60 fps)
MAX_DECODED_FRAMES = 20_000
#: pixels decoded per video item, all frames together (each decoded frame's real size, not the declared one):
#: 4.3 Gpx is 5 minutes of 480p at 30 fps or 70 s of 1080p; a MOV pointing 2,000 samples at one big PNG is not
MAX_VIDEO_PIXELS = 1 << 32
#: seconds FFmpeg may block opening a container / waiting for a read (its interrupt callback): the data is in
#: memory, so any wait is a demuxer doing something it should not
FFMPEG_OPEN_TIMEOUT_S = 5.0
FFMPEG_READ_TIMEOUT_S = 5.0

# ---- every item ---------------------------------------------------------------------------------------------
#: wall-clock seconds one item may take to decode, checked in every decoding loop (frames, packets, parts): the
#: budgets above bound the work, this bounds what they miss (a slow codec, a loaded machine)
MAX_DECODE_SECONDS = 30.0
#: decoded bytes one item may hold (an interleaved item's parts together; one image is at most
#: MAX_IMAGE_BYTES while it decodes, a video its kept frames and sound track, ~40 MiB)
MAX_ITEM_BYTES = 256 << 20
#: decoded bytes an encode call holds at once: items are decoded a window at a time (at most a batch of items,
#: and no more than this many bytes), embedded, then dropped, so a dynamic batch of 32 large images is never
#: all in memory at once
MAX_HELD_BYTES = 512 << 20
