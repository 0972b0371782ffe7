"""Golden parity: our UniAS head reproduces the reference model's outputs (docs/parity_fixture.md §4).

Weights are regenerated from the fixture's formula in reference names, converted with our checkpoint
converter and loaded into the paper-width head; the stored raw backbone taps are fed in eval mode and
every stored output is compared with ``max|x - ref| <= 2e-5 * max|ref|`` (losses: relative 1e-6).
"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F  # noqa: N812

from anomalib_unias.reference_checkpoint import convert_reference_state_dict
from anomalib_unias.torch_model import UniASHead

from .reference_fixture import ALL_TENSORS_SHA256, FIXTURE_FILE, formula_head_state_dict, require_reference

RTOL_OF_MAX = 2e-5
LOSS_RTOL = 1e-6
RES_NAMES = ["res4", "res3", "res2", "res1"]


def tokens_to_reference(tokens: torch.Tensor) -> torch.Tensor:
    """Our (B, N, d) tokens in the fixture's (N, B, d) layout."""
    return tokens.transpose(0, 1)


def grid_to_reference(grid: torch.Tensor) -> torch.Tensor:
    """A (B, d, h, w) map on the query grid in the fixture's (N, B, d) token layout."""
    return grid.flatten(2).permute(2, 0, 1)


@pytest.fixture(scope="module")
def parity_run() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    """Run the converted head on the fixture inputs; return (ours, reference, weights digest)."""
    require_reference()
    torch.set_num_threads(2)
    # benchmarks/gpu_check.sh runs this test on a GPU with UNIAS_PARITY_DEVICE=cuda (TF32 off: plain FP32).
    device = torch.device(os.environ.get("UNIAS_PARITY_DEVICE", "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    reference = load_file(FIXTURE_FILE)
    official, digest = formula_head_state_dict()
    converted, dropped = convert_reference_state_dict(official)
    assert not dropped
    head = UniASHead([24, 32, 56, 160])  # the paper's architecture
    head.load_state_dict({k.removeprefix("head."): v for k, v in converted.items()}, strict=True)
    head.eval().to(device)

    captured: dict[str, torch.Tensor] = {}

    def keep(name: str, convert=lambda t: t):
        return lambda _module, _inputs, output: captured.__setitem__(name, convert(output))

    decoder = head.decoder
    head.pixel_decoder.register_forward_hook(keep("pixdec", list))
    decoder.queries.feature_projector.register_forward_hook(keep("projected"))
    decoder.queries.register_forward_hook(keep("dec.query.init", tokens_to_reference))
    decoder.blocks[0].register_forward_hook(keep("dec.stage0.block_out", tokens_to_reference))
    for level, adaptor in enumerate(decoder.adaptors):
        adaptor.register_forward_hook(keep(f"dec.stage{level}.tokens", grid_to_reference))

    features = [reference[f"input.feat.res{i}"].to(device) for i in (1, 2, 3, 4)]
    with torch.no_grad():
        result = head.reconstruct(features)
        level_maps = head.anomaly_map.level_maps(result.reconstructions, result.targets)
        prediction = head(features)
        head.loss.legacy_cos_sign = True
        loss_code, _ = head.loss(result.reconstructions, result.targets)
        head.loss.legacy_cos_sign = False
        loss_paper, _ = head.loss(result.reconstructions, result.targets)
        channel = decoder.queries.channel_weights(captured["projected"])
        spatial = decoder.queries.spatial_weights(captured["projected"])

    pixdec = captured["pixdec"]
    ours = {
        "pixdec.out0_14": pixdec[0],
        "pixdec.out1_28": pixdec[1],
        "pixdec.out2_56": pixdec[2],
        "pixdec.out3_112.crop_tl16": pixdec[3][:, :, :16, :16],
        "pixdec.out3_112.crop_br16": pixdec[3][:, :, 96:, 96:],
        "pixdec.out3_112.chan_mean": pixdec[3].double().mean(dim=(2, 3)).float(),
        "pixdec.out3_112.chan_rms": pixdec[3].double().pow(2).mean(dim=(2, 3)).sqrt().float(),
        "dec.pos_embed_14": decoder.memory_pos[0].transpose(0, 1).reshape(256, 14, 14),
        "dec.query.channel_weight": channel,
        "dec.query.spatial_weight": spatial,
        "amap.final": prediction.anomaly_map,
        "score.max": prediction.pred_score,
        "score.std": prediction.anomaly_map.double().flatten(1).std(dim=1, unbiased=False).float(),
        "loss.official_code": loss_code,
        "loss.paper_sign": loss_paper,
    }
    ours.update({k: v for k, v in captured.items() if k.startswith("dec.")})
    for level, name in enumerate(RES_NAMES):
        ours[f"target.{name}"] = result.targets[level]
        ours[f"recon.l{level}_{name}"] = result.reconstructions[level]
        native = 1 - F.cosine_similarity(result.reconstructions[level], result.targets[level], dim=1, eps=1e-8)
        ours[f"amap.l{level}_{name}.native"] = native
        ours[f"amap.l{level}_{name}.blur112"] = level_maps[level][:, 0]
    mse, code_cos, one_minus_cos = [], [], []
    for reconstruction, target in zip(result.reconstructions, result.targets, strict=True):
        head.loss.legacy_cos_sign = True
        level_mse, cos_term = head.loss.level_terms(reconstruction, target)
        head.loss.legacy_cos_sign = False
        one_minus_cos.append(head.loss.level_terms(reconstruction, target)[1])
        mse.append(level_mse)
        code_cos.append(cos_term)
    ours["loss.level_mse"] = torch.stack(mse)
    ours["loss.level_cos_term_code"] = torch.stack(code_cos)
    ours["loss.level_one_minus_cos"] = torch.stack(one_minus_cos)
    return {name: value.detach().cpu() for name, value in ours.items()}, reference, digest


def test_formula_weights_match_fixture_checksum(parity_run) -> None:
    """The regenerated weights are the fixture's (SHA-256 over all 324 tensors)."""
    assert parity_run[2] == ALL_TENSORS_SHA256


def test_every_stored_output_is_compared(parity_run) -> None:
    """No stored output array escapes the comparison."""
    ours, reference, _ = parity_run
    outputs = {k for k in reference if not k.startswith("input.")}
    assert outputs == set(ours)


@pytest.mark.parametrize(
    "name",
    [
        "target.res4", "target.res3", "target.res2", "target.res1",
        "pixdec.out0_14", "pixdec.out1_28", "pixdec.out2_56",
        "pixdec.out3_112.crop_tl16", "pixdec.out3_112.crop_br16",
        "pixdec.out3_112.chan_mean", "pixdec.out3_112.chan_rms",
        "dec.pos_embed_14", "dec.query.channel_weight", "dec.query.spatial_weight", "dec.query.init",
        "dec.stage0.block_out", "dec.stage0.tokens", "dec.stage1.tokens", "dec.stage2.tokens", "dec.stage3.tokens",
        "recon.l0_res4", "recon.l1_res3", "recon.l2_res2", "recon.l3_res1",
        "amap.l0_res4.native", "amap.l1_res3.native", "amap.l2_res2.native", "amap.l3_res1.native",
        "amap.l0_res4.blur112", "amap.l1_res3.blur112", "amap.l2_res2.blur112", "amap.l3_res1.blur112",
        "amap.final", "score.max", "score.std",
        "loss.level_mse", "loss.level_cos_term_code", "loss.level_one_minus_cos",
    ],
)  # fmt: skip
def test_output_matches_reference(parity_run, name: str) -> None:
    """Each array within 2e-5 of its max |value| (10x the float32 spread the fixture measured)."""
    ours, reference, _ = parity_run
    expected = reference[name]
    actual = ours[name]
    assert actual.shape == expected.shape
    diff = (actual - expected).abs().max().item()
    bound = RTOL_OF_MAX * expected.abs().max().item()
    print(f"{name}: max abs diff {diff:.3e} (bound {bound:.3e})")
    assert diff <= bound


@pytest.mark.parametrize("name", ["loss.official_code", "loss.paper_sign"])
def test_loss_matches_reference(parity_run, name: str) -> None:
    """Both loss conventions within relative 1e-6."""
    ours, reference, _ = parity_run
    rel = ((ours[name] - reference[name]).abs() / reference[name].abs()).item()
    print(f"{name}: ours {ours[name].item():.6f} reference {reference[name].item():.6f} rel {rel:.2e}")
    assert rel <= LOSS_RTOL
