"""Each benchmark script runs on a tiny setting and reports sane numbers. Speed itself is
never asserted here: the scripts print ratios against their own baselines."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_ingest_benchmark_runs(tmp_path):
    import ingest as bench

    summary = bench.main(["--tiny", "--photos", str(tmp_path / "photos")])
    assert summary["images"] == 6 and summary["baseline_images_per_s"] > 0
    assert summary["fp32_ratio"] > 0 and summary["bf16_ratio"] > 0


def test_search_benchmark_runs():
    import search as bench

    results = bench.main(["--tiny"])["results"]
    assert [r["kind"] for r in results] == ["flat", "ivf"]
    assert results[0]["recall_at_10"] == 1.0  # exact search is its own ground truth
    assert 0 < results[1]["recall_at_10"] <= 1.0


@pytest.mark.slow  # 13 s here: four processes, each importing FAISS on a busy machine
def test_compressed_benchmark_runs():
    import compressed as bench

    summary = bench.main(["--tiny"])
    runs = summary["runs"]
    assert runs["ivf"]["describe"]["kind"] == "ivf" and runs["ivfpq"]["describe"]["kind"] == "ivfpq"
    assert runs["ivfpq"]["recall_at_10"] > runs["ivfpq"]["pq_alone_recall_at_10"]  # re-ranking
    assert all(0 < r["recall_at_10"] <= 1 and r["p50_ms"] > 0 for r in runs.values())
    assert summary["ratios_ivfpq_over_ivf"]["file_mb"] > 0


@pytest.mark.slow
def test_query_benchmark_runs():
    import query as bench

    summary = bench.main(["--tiny"])
    assert summary["cold_search_s"] > 0 and summary["encode_ms"] > 0
    assert summary["cold_search_full_model_s"] > 0 and summary["tower_speedup"] > 0


@pytest.mark.slow
def test_peer_benchmark_runs(tmp_path):
    """Without rclip here: mmindex, its torch path and the README loop, as whole processes."""
    import peer as bench

    summary = bench.main([str(tmp_path), "--tiny"])
    assert summary["images"] == 6 and summary["first_ingest_with_export_s"] > 0
    for tool in ("mmindex", "mmindex_int8", "mmindex_torch", "readme_loop"):
        run = summary[f"ingest_{tool}"]
        assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["peak_mb"] > 0
    assert summary["ingest_mmindex"]["vs_mmindex"] == 1.0
    assert summary["cold_mmindex_torch"]["cpu_s"] > 0 and "cold_rclip" not in summary
    assert summary["warm_mmindex"]["median_ms"] > 0


@pytest.mark.slow
def test_int8_benchmark_runs():
    import int8 as bench

    summary = bench.main(["--tiny"])
    torch_run, onnx_run = summary["torch_fp32"], summary["onnx_fp32"]
    assert summary["images"] == 40 and summary["onnx_int8"]["seconds"] > 0
    assert abs(onnx_run["t2i_r5"] - torch_run["t2i_r5"]) <= 0.05  # the same model, exported


@pytest.mark.slow
def test_memory_benchmark_runs():
    import memory as bench

    summary = bench.main(["--tiny"])
    assert summary["corpus_ratio"] == 3 and summary["growth_ratio"] > 0


def test_ask_benchmark_runs():
    pytest.importorskip("transformers")
    import ask as bench

    summary = bench.main(["--tiny", "--new-tokens", "4"])
    assert summary["k0_prompt_tokens"] + 3 * 4 < summary["k3_prompt_tokens"]  # 3 images, 4 each
    assert summary["k3_decode_tokens_per_s"] > 0 and summary["k3_prefill_ratio"] > 0
    assert summary["vision_3_images_s"] > 0 and summary["peak_rss_mb"] > 0
    assert summary["ask_k3_each_s"] > 0 and summary["ask_k3_joint_s"] > 0


@pytest.mark.slow
def test_ask_backends_benchmark_runs():
    pytest.importorskip("transformers")
    import ask_backends as bench

    summary = bench.main(["--rounds", "1"])
    assert set(summary) == {"projector + tiny Llama", "tiny LLaVA", "tiny Idefics3",
                            "tiny Qwen2-VL"}
    for result in summary.values():
        assert result["answer_s"] > 0 and result["new_tokens"] > 0
        assert 100 < result["peak_rss_mb"] < 8000  # its own process's, not the parent's


@pytest.mark.slow
def test_fusion_benchmark_runs(tmp_path):
    pytest.importorskip("transformers")
    import fusion_shapes as bench

    results = bench.main(["--tiny", "--out", str(tmp_path / "run")])["results"]
    assert set(results) == {"prefix", "cross-attention", "early"}
    assert results["cross-attention"]["context_per_image"] == 1  # a marker, not its tokens
    assert all(r["steps"] > 0 and r["trained_parameters"] > 0 for r in results.values())
    assert "overall" in results["prefix"]["text_only"]
    assert (tmp_path / "run" / "fusion.png").read_bytes()[:4] == b"\x89PNG"


def test_lexical_benchmark_runs():
    import lexical as bench

    (result,) = bench.main(["--tiny"])["results"]
    assert result["passages"] == 500 and result["build_s"] > 0
    assert result["lexical_query_ms"] > 0 and result["vector_query_ms"] > 0


@pytest.mark.slow  # two tiny ingests, one with tiles
def test_tiles_benchmark_runs(tmp_path):
    import tiles as bench

    from mmindex.data.shapes import write_shapes

    write_shapes(tmp_path / "canvas", n=6, seed=7, size=32, canvas=96)
    rows = bench.main(["test-tiny", str(tmp_path / "canvas"), str(tmp_path / "work"),
                       "--budgets", "0,4", "--rerank", "3"])
    modes = {(r["budget"], r["mode"]) for r in rows}
    assert modes == {(0, "one vector"), (4, "one vector"), (4, "rerank only"), (4, "tiles"),
                     (4, "tiles + rerank")}
    assert all(0 <= r["recall@1"] <= r["recall@5"] <= 1 for r in rows)
    assert next(r["tiles"] for r in rows if r["budget"] == 4) == 6 * 4
    assert (tmp_path / "work" / "tiles.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # starts a local Ray: ~30 s here
def test_ray_ingest_benchmark_runs(tmp_path):
    import ray_ingest as bench

    summary = bench.main(["--images", "40", "--size", "32", "--modes", "local,ray",
                          "--photos", str(tmp_path / "photos")])
    assert summary["local"]["images"] == summary["ray"]["images"] == 40
    assert summary["ray"]["driver_peak_mb"] > 0 and summary["ray"]["ray_workers"] > 0


@pytest.mark.slow  # OPQ trains its rotation: seconds even on 1000 vectors
def test_opq_benchmark_runs():
    import opq as bench

    summary = bench.main(["--n", "1000", "--dim", "32", "--queries", "10"])
    for name in ("plain", "opq"):
        run = summary[name]
        assert 0 < run["recall_pq_only"] <= run["recall_reranked"] <= 1, name  # re-ranking
        assert run["build_s"] > 0 and run["index_mb"] > 0
    assert summary["opq"]["index_mb"] > summary["plain"]["index_mb"]  # the rotation it keeps


@pytest.mark.slow  # two child processes, each importing pyarrow: ~3 s here
def test_stored_vectors_benchmark_runs():
    import stored_vectors as bench

    summary = bench.main(["--tiny"])  # exits when the two readers' results differ
    assert (summary["rows"], summary["dim"]) == (2000, 64)
    assert all(s > 0 for s in summary["seconds"].values())
    assert summary["speed_ratio"] > 0 and summary["memory_ratio"] > 0


def test_stored_rows_benchmark_runs():  # in process, 2k rows: well under a second
    import stored_rows as bench

    summary = bench.main(["--tiny", "--repeats", "1"])  # exits when the readers disagree
    assert (summary["rows"], summary["wanted"]) == (2000, 5)
    assert all(s > 0 for s in summary["seconds"].values()) and summary["speed_ratio"] > 0
