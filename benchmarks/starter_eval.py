"""How well the offline `starter` model finds real photos from words, and copies from copies.

    python benchmarks/starter_eval.py                       # sample_data/photos, starter
    python benchmarks/starter_eval.py --compare             # + posterior-only and ridge-only
    python benchmarks/starter_eval.py --skimage             # the 14 skimage/sklearn photos
    python benchmarks/starter_eval.py --photos DIR --model ViT-B-32:laion2b_s34b_b79k

Prints, per text query, the rank of the right photo among all photos of the folder (1 is
best) and the photo ranked first; the top-1 rate for the tuning queries, for the held-out
queries (written before the method was frozen, never tuned on) and for both; then the
image→image copy test (each photo resized to half and re-encoded as JPEG q60 must find its
original first); then encode speed. Photos whose subject has no queries are distractors.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = REPO / "sample_data" / "photos"

# subject -> natural queries naming what the photo shows. Tuning queries first; the
# held-out ones were written together with them and only scored once the method was frozen.
QUERIES = {
    "astronaut": ["an astronaut", "a woman in a space suit", "an astronaut in an orange suit"],
    "cat": ["a cat", "a tabby cat", "a close-up of a cat's face"],
    "coffee": ["a cup of coffee", "an espresso", "a coffee cup on a saucer"],
    "rocket": ["a rocket launch", "a rocket on the launch pad",
               "a spacecraft launch site at night"],
    "photographer": ["a photographer with a camera", "a man with a camera on a tripod",
                     "a cameraman"],
    "greek_coins": ["coins", "old silver coins", "a collection of ancient coins"],
    "wall_clock_blurred": ["a clock", "a blurry clock"],
    "hubble_deep_field": ["galaxies in deep space", "a telescope image of distant galaxies",
                          "stars in the night sky"],
    "moon": ["the moon", "the surface of the moon", "lunar craters"],
    "tissue_microscopy": ["cells under a microscope", "a microscope image of tissue",
                          "a stained tissue sample"],
    "horse": ["a horse", "a silhouette of a horse"],  # skimage's is black, sample_data's brown
    "motorcycle": ["a motorcycle", "a red motorbike", "a motorcycle in a garage"],
    "chinese_pagoda": ["a Chinese temple", "a pagoda", "a traditional Chinese building"],
    "orange_flower": ["a flower", "an orange dahlia", "a flower in bloom"],
}
HELD_OUT = {
    "astronaut": ["a spacewoman", "an astronaut holding a helmet"],
    "cat": ["a kitty", "a cat with green eyes"],
    "coffee": ["a coffee", "a cappuccino cup"],
    "rocket": ["a rocket ready for launch", "a launch tower"],
    "photographer": ["a man filming", "a vintage movie camera"],
    "greek_coins": ["a coin collection", "money"],
    "wall_clock_blurred": ["a clock face", "a timepiece"],
    "hubble_deep_field": ["outer space", "the universe"],
    "moon": ["a moon crater", "the lunar surface"],
    "tissue_microscopy": ["histology", "a biopsy slide"],
    "horse": ["a stallion", "a pony", "a drawing of a horse"],
    "motorcycle": ["a motor bike", "a parked motorcycle"],
    "chinese_pagoda": ["an oriental palace", "a Chinese tower"],
    "orange_flower": ["a blossom", "petals"],
    # retina.jpg joined sample_data after tuning: all its queries are unseen
    "retina": ["a retina", "the back of an eye", "a fundus photograph of an eye"],
}
# file stem -> subject, where they differ (skimage names, derived copies)
SUBJECT_OF = {
    "chelsea": "cat", "camera": "photographer", "coins": "greek_coins",
    "clock": "wall_clock_blurred", "immunohistochemistry": "tissue_microscopy",
    "china": "chinese_pagoda", "flower": "orange_flower", "stereo_motorcycle": "motorcycle",
    "rocket_exif_rotated": "rocket", "horse_transparent": "horse",
}


@dataclass(frozen=True)
class Photo:
    name: str
    subject: str
    image: Image.Image


def load_folder(folder: Path, image_size: int) -> list[Photo]:
    """Decode every image the way ingest does (draft, EXIF upright, alpha on white)."""
    from mmindex.data.images import DecodeError, decode_image

    photos = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"}:
            continue
        try:
            image = decode_image(path, min_side=image_size).image
        except DecodeError as exc:
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
            continue
        photos.append(Photo(path.name, SUBJECT_OF.get(path.stem, path.stem), image))
    return photos


def load_skimage() -> list[Photo]:
    """The 14 photos the method was tuned on, straight from scikit-image and scikit-learn."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "clock",
             "hubble_deep_field", "moon", "immunohistochemistry", "horse"]
    arrays = {name: getattr(skimage.data, name)() for name in names}
    arrays["horse"] = arrays["horse"].astype(np.uint8) * 255  # True is the white background
    arrays["stereo_motorcycle"] = skimage.data.stereo_motorcycle()[0]
    samples = load_sample_images()
    for filename, array in zip(samples.filenames, samples.images, strict=True):
        arrays[Path(filename).stem] = array
    return [Photo(name, SUBJECT_OF.get(name, name), Image.fromarray(array).convert("RGB"))
            for name, array in arrays.items()]


def rank_of_right(scores: np.ndarray, subjects: list[str], subject: str) -> int:
    """1 + how many photos of other subjects score above the best photo of this one."""
    right = np.array([s == subject for s in subjects])
    best_right = scores[right].max()
    return int((scores[~right] > best_right).sum()) + 1


def jpeg_copy(image: Image.Image) -> Image.Image:
    """Half size, re-encoded as JPEG quality 60: what a messenger app does to a photo."""
    small = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=60)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def encode_photos(encoder, images: list[Image.Image]) -> np.ndarray:
    import torch

    return encoder.encode_images(torch.stack([encoder.preprocess(image) for image in images]))


def text_ranks(encoder, photo_vectors, photos, table) -> list[tuple[str, str, int, str]]:
    """(query, subject, rank of the right photo, name of the photo ranked first) per query."""
    subjects = [photo.subject for photo in photos]
    asked = [(query, subject) for subject, queries in table.items() if subject in subjects
             for query in queries]
    if not asked:
        return []
    scores = encoder.encode_texts([query for query, _ in asked]) @ photo_vectors.T
    return [(query, subject, rank_of_right(row, subjects, subject),
             photos[int(row.argmax())].name)
            for (query, subject), row in zip(asked, scores, strict=True)]


def copy_ranks(encoder, photo_vectors, photos) -> list[int]:
    copies = encode_photos(encoder, [jpeg_copy(photo.image) for photo in photos])
    subjects = [photo.subject for photo in photos]
    scores = copies @ photo_vectors.T
    return [rank_of_right(row, subjects, photo.subject)
            for row, photo in zip(scores, photos, strict=True)]


def measure_speed(encoder, photos, repeats: int = 3) -> dict[str, float]:
    images = [photos[i % len(photos)].image for i in range(32)]
    start = time.perf_counter()
    pixels = [encoder.preprocess(image) for image in images]
    preprocess_s = (time.perf_counter() - start) / len(images)
    import torch

    batch = torch.stack(pixels)
    encoder.encode_images(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        encoder.encode_images(batch)
    image_s = (time.perf_counter() - start) / (repeats * len(images))
    queries = [q for qs in QUERIES.values() for q in qs][:32]
    encoder.encode_texts(queries[:2])
    start = time.perf_counter()
    for query in queries:
        encoder.encode_texts([query])
    text_s = (time.perf_counter() - start) / len(queries)
    return {"preprocess ms/img": preprocess_s * 1e3, "encode ms/img (batch 32)": image_s * 1e3,
            "encode ms/query (one at a time)": text_s * 1e3}


def variants(encoder, compare: bool) -> dict[str, object]:
    """The chosen model, and with --compare the two halves it joins, sharing the weights."""
    if not compare or not hasattr(encoder, "config"):
        return {"chosen": encoder}
    from mmindex.models.starter import StarterEncoder

    def with_weight(weight):
        config = replace(encoder.config, feature_weight=weight)
        return StarterEncoder(encoder.image_net, encoder.text_model, encoder.bridge, config,
                              encoder.device)

    return {"chosen": encoder, "posterior": with_weight(0.0), "ridge": with_weight(1.0)}


def print_report(results: dict[str, dict], photos: list[Photo]) -> None:
    names = list(results)
    print(f"{len(photos)} photos: {', '.join(photo.name for photo in photos)}\n")
    for table_name in ("tuning", "held-out"):
        rows = {name: results[name][table_name] for name in names}
        first = rows[names[0]]
        if not first:
            continue
        print(f"{table_name + ' queries':38s} " + "  ".join(f"{n:>9s}" for n in names)
              + f"  first for {names[0]}")
        for i, (query, _, _, top) in enumerate(first):
            ranks = "  ".join(f"{rows[n][i][2]:9d}" for n in names)
            print(f"  {query[:38]:38s} {ranks}  {top}")
        print("  top-1 rate" + " " * 29 + "  ".join(
            f"{_rate(rows[n]):>9s}" for n in names) + "\n")
    for name in names:
        every = results[name]["tuning"] + results[name]["held-out"]
        copies = results[name]["copies"]
        print(f"{name}: all queries top-1 {_rate(every)}; copy found at rank 1 for "
              f"{sum(r == 1 for r in copies)}/{len(copies)} photos (worst rank {max(copies)})")


def _rate(rows) -> str:
    hits = sum(row[2] == 1 for row in rows)
    return f"{hits}/{len(rows)} {100 * hits / max(len(rows), 1):.0f}%"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--skimage", action="store_true", help="use the 14 skimage/sklearn photos")
    parser.add_argument("--model", default="starter")
    parser.add_argument("--compare", action="store_true", help="also score the two halves")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from mmindex.models.registry import load_encoder

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    encoder = load_encoder(args.model)
    print(f"model {encoder.info.spec} (dim {encoder.info.dim}, fingerprint "
          f"{encoder.info.fingerprint}) loaded in {time.perf_counter() - start:.1f} s")
    photos = load_skimage() if args.skimage else load_folder(args.photos, encoder.info.image_size)
    results = {}
    for name, variant in variants(encoder, args.compare).items():
        vectors = encode_photos(variant, [photo.image for photo in photos])
        results[name] = {"tuning": text_ranks(variant, vectors, photos, QUERIES),
                         "held-out": text_ranks(variant, vectors, photos, HELD_OUT),
                         "copies": copy_ranks(variant, vectors, photos)}
    print_report(results, photos)
    for key, value in measure_speed(encoder, photos).items():
        print(f"{key}: {value:.1f}")


if __name__ == "__main__":
    main()
