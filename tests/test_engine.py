"""The recipe's parts, the loop, batch equivalence, determinism and a planted feature."""

import math

import pytest
import torch

from sweep.core.errors import SweepError
from sweep.method.augment import augment, channel_offset, color_shift, draw, draw_schedule, offset_decay, roll
from sweep.method.engine import CPU_FEATURES_PER_PASS, Engine, passes_that_fit
from sweep.method.objectives import feature_loss, total_variation
from sweep.method.optimize import optimize
from sweep.method.param import feature_generators, init_pixels
from sweep.method.recipe import Recipe
from sweep.method.render import ModelInput, render, seeds_for
from sweep.models.build import build
from sweep.models.taps import read_features


def test_paper_defaults():
    r = Recipe()
    assert (r.steps, r.iterations, r.copies, r.jitter) == (400, 401, 8, 32)
    assert (r.beta1, r.beta2, r.eps) == (0.5, 0.99, 1e-8)
    assert r.resolved(lr=0.1, image_size=224).tv_coef == pytest.approx(0.0005)
    assert Recipe(tv=30).tv_coef == pytest.approx(0.015)
    assert r.reference_scale and r.lr is None and r.tv is None and r.defaults == "tuned"
    with pytest.raises(SweepError, match="unresolved"):
        r.tv_coef
    assert r.resolved(lr=1.0, image_size=224).lr == 1.0
    assert Recipe(lr=0.3).resolved(lr=1.0, image_size=224).lr == 0.3


def test_offset_decay_reproduces_reference_counter():
    # r_i = 398 - i for i = 0..398, then the counter wraps to 399 and 398.
    assert offset_decay(0, 400) == pytest.approx(398 / 400)
    assert offset_decay(100, 400) == pytest.approx(298 / 400)
    assert offset_decay(398, 400) == 0.0
    assert offset_decay(399, 400) == pytest.approx(399 / 400)
    assert offset_decay(400, 400) == pytest.approx(398 / 400)


def test_draw_ranges_and_order():
    r = Recipe()
    d = draw(torch.Generator().manual_seed(1), r)
    assert d.mu.shape == d.sigma.shape == d.offset.shape == (8, 3)
    assert (d.mu >= -1).all() and (d.mu < 1).all()
    assert (d.sigma >= math.exp(-1)).all() and (d.sigma < math.e).all()
    assert all(-32 <= s <= 32 for s in d.shift)
    g = torch.Generator().manual_seed(1)
    mu = (torch.rand((8, 3), generator=g) - 0.5) * 2
    torch.testing.assert_close(d.mu, mu)


def test_transforms_by_hand():
    z = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    mu = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    sigma = torch.tensor([[2.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    out = color_shift(z, mu, sigma)
    assert out[0, 1, 0, 0] == (z[0, 1, 0, 0] - 2) / 2
    assert torch.equal(out[1], z[1])
    off = channel_offset(z, torch.ones(2, 3))
    assert torch.equal(off, z + 1)
    img = torch.arange(9.0).view(1, 1, 3, 3)
    assert torch.equal(roll(img, torch.tensor([[1, 0]]))[0, 0, 0], img[0, 0, 2])  # circular, not padded


def test_batched_roll_equals_torch_roll_per_image():
    z = torch.rand(4, 3, 7, 9)
    shifts = torch.tensor([[0, 0], [3, -2], [-7, 9], [12, -20]])
    out = roll(z, shifts)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[i], torch.roll(z[i], shifts=(dy, dx), dims=(-2, -1)))


def test_schedule_augment_equals_step_by_step_composition():
    """Drawing every step ahead gives exactly the images of drawing step by step."""
    r = Recipe(steps=6, copies=3, jitter=4)
    x = torch.rand(2, 3, 10, 10)
    schedule = draw_schedule(feature_generators([3, 8]), r)
    gens = feature_generators([3, 8])
    for step in range(r.iterations):
        groups = []
        for image, gen in zip(x, gens):
            d = draw(gen, r)
            z = image.unsqueeze(0).expand(r.copies, -1, -1, -1)
            z = color_shift(z, d.mu, d.sigma)
            z = channel_offset(z, d.offset * (r.offset_std * offset_decay(step, r.steps)))
            groups.append(torch.roll(z, shifts=d.shift, dims=(-2, -1)))
        assert torch.equal(augment(x, step, schedule), torch.cat(groups))
    half = augment(x[1:], 2, schedule.features(slice(1, 2)))
    assert torch.equal(half, augment(x, 2, schedule)[r.copies:])


def test_augment_shapes_and_shared_shift():
    r = Recipe(copies=4, color_mean=0.0, color_std=0.0, offset_std=0.0, jitter=3)
    x = torch.rand(2, 3, 8, 8)
    z = augment(x, 0, draw_schedule(feature_generators([5, 6]), r))
    assert z.shape == (8, 3, 8, 8)
    # With colour and offset switched off, every copy of a feature is the same rolled image.
    d = draw(torch.Generator().manual_seed(5), r)
    torch.testing.assert_close(z[0], torch.roll(x[0], shifts=d.shift, dims=(-2, -1)))
    assert torch.equal(z[0], z[3])


def test_total_variation_by_hand():
    z = torch.zeros(1, 1, 3, 3)
    z[0, 0, 1, 1] = 1.0
    # In each of the 4 directions the centre pixel enters exactly 2 differences of magnitude 1,
    # so every direction's L2 norm is sqrt(2).
    assert total_variation(z).item() == pytest.approx(4 * math.sqrt(2))
    rgb = torch.zeros(1, 3, 3, 3)
    rgb[0, 0, 1, 1] = 1.0  # one channel of three: the channel mean divides by 3
    assert total_variation(rgb).item() == pytest.approx(4 * math.sqrt(2) / 3)


def test_feature_loss_scaling():
    acts = torch.arange(16.0)
    ref = feature_loss(acts, copies=8, reference_scale=True)
    assert ref.tolist() == pytest.approx([-sum(range(8)) / 64, -sum(range(8, 16)) / 64])
    plain = feature_loss(acts, copies=8, reference_scale=False)
    assert plain.tolist() == pytest.approx([-3.5, -11.5])


def test_loop_runs_steps_plus_one_with_cosine_to_zero():
    recipe = Recipe(steps=10, lr=0.01, log_every=3)
    seen = []
    x0 = torch.full((1, 3, 4, 4), 0.5)

    def loss_fn(x, step, part):
        assert part == slice(0, 1)
        seen.append((step, x.detach().clone()))
        return -(x.sum(dim=(1, 2, 3))), x.mean(dim=(1, 2, 3))

    image, trace = optimize(x0, loss_fn, recipe)
    assert [s for s, _ in seen] == list(range(11))
    assert trace.steps == [0, 3, 6, 9, 10] and trace.loss.shape == (5, 1)
    # A constant gradient makes each Adam update equal to that step's learning rate, so the
    # image's movement traces the cosine schedule: lr_i = lr * (1 + cos(pi * i / 10)) / 2.
    xs = [x for _, x in seen] + [image]
    for i in range(11):
        expected = 0.01 * (1 + math.cos(math.pi * i / 10)) / 2
        torch.testing.assert_close((xs[i + 1] - xs[i]).mean().item(), expected, atol=1e-6, rtol=1e-4)
    assert (xs[-1] - xs[-2]).abs().max() < 1e-7  # the last (401st) iteration runs at lr 0


def test_loop_clamps_to_unit_range():
    recipe = Recipe(steps=5, lr=1.0)
    image, _ = optimize(torch.full((2, 3, 4, 4), 0.5),
                        lambda x, step, part: (-(x.sum(dim=(1, 2, 3))), x.mean(dim=(1, 2, 3))), recipe)
    assert torch.equal(image, torch.ones_like(image))


def test_init_pixels_uniform_and_seeded():
    a = init_pixels(feature_generators([3, 4]), 16)
    b = init_pixels(feature_generators([3]), 16)
    assert a.shape == (2, 3, 16, 16) and (a >= 0).all() and (a < 1).all()
    assert torch.equal(a[0], b[0])


def test_batch_gives_same_images_as_one_at_a_time(micro):
    anatomy, net = micro
    block = anatomy.block(1)
    recipe = Recipe(steps=12, jitter=4)
    feats = [3, 17, 40]
    together = render(net, anatomy, block, "mlp", feats, recipe, seeds_for(feats), "cpu",
                      engine=Engine("fp32", features_per_pass=len(feats)))
    for i, f in enumerate(feats):
        alone = render(net, anatomy, block, "mlp", [f], recipe, seeds_for([f]), "cpu", engine=Engine("fp32"))
        torch.testing.assert_close(alone.images[0], together.images[i], rtol=0, atol=1e-6)
        torch.testing.assert_close(alone.trace.loss[:, 0], together.trace.loss[:, i])


def test_features_per_pass_does_not_change_results(micro):
    anatomy, net = micro
    block = anatomy.block(2)
    recipe = Recipe(steps=8, jitter=4)
    feats = [1, 2, 3, 4, 5]
    whole = render(net, anatomy, block, "mlp", feats, recipe, seeds_for(feats), "cpu",
                   engine=Engine("fp32", features_per_pass=len(feats)))
    chunked = render(net, anatomy, block, "mlp", feats, recipe, seeds_for(feats), "cpu",
                     engine=Engine("fp32", features_per_pass=2))
    torch.testing.assert_close(chunked.images, whole.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked.trace.loss, whole.trace.loss)
    torch.testing.assert_close(chunked.act_final, whole.act_final)


def test_image_size_other_than_model_input(micro):
    anatomy, net = micro
    out = render(net, anatomy, anatomy.block(0), "mlp", [0], Recipe(steps=2, jitter=2, image_size=48), [0], "cpu")
    assert out.images.shape == (1, 3, 48, 48)  # resized to the model's 32 px input inside the loop


def test_attention_sites_render(micro):
    anatomy, net = micro
    block = anatomy.block(2)
    for site in ("q", "k", "v", "attn_out"):
        out = render(net, anatomy, block, site, [0, 5], Recipe(steps=2, jitter=2), [0, 5], "cpu")
        assert out.images.shape == (2, 3, 32, 32)
        assert torch.isfinite(out.act_final).all()


# --- planted feature ----------------------------------------------------------------------------

PLANTED = 7


def plant_redness_unit(net, feature=PLANTED):
    """Rewire the micro ViT so MLP unit `feature` of block 0 measures how red each patch is.

    Patch embedding channel 0 = mean(R) - (mean(G) + mean(B)) / 2 of the (normalized) patch,
    channel 1 its negative, channels 2/3 constant +-3 so LayerNorm keeps the magnitude. The
    attention branch is zeroed, and fc1 row `feature` reads channel 0 after norm2.
    """
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        pe = net.patch_embed.proj
        k = pe.kernel_size[0] * pe.kernel_size[1]
        pe.weight[0, 0] = 1.0 / k
        pe.weight[0, 1] = -0.5 / k
        pe.weight[0, 2] = -0.5 / k
        pe.weight[1] = -pe.weight[0]
        pe.bias[2], pe.bias[3] = 3.0, -3.0
        for blk in net.blocks:
            blk.norm1.weight.fill_(1.0)
            blk.norm2.weight.fill_(1.0)
        fc1 = net.blocks[0].mlp.fc1
        fc1.weight[feature, 0] = 3.0
        fc1.bias[feature] = -3.0
    return net


def natural_like_images(n=6, size=32):
    """Smooth colour scenes (gradients and blobs), like photos, not tuned to the unit."""
    g = torch.Generator().manual_seed(123)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    imgs = []
    for _ in range(n):
        c0, c1 = torch.rand(3, generator=g), torch.rand(3, generator=g)
        t = (xx * torch.rand(1, generator=g) + yy * torch.rand(1, generator=g)).clamp(0, 1)
        imgs.append(c0[:, None, None] * (1 - t) + c1[:, None, None] * t)
    return torch.stack(imgs)


def test_planted_feature_is_found_and_shown(micro):
    anatomy, _ = micro
    net = plant_redness_unit(build(anatomy.entry, "random"))
    block = anatomy.block(0)
    prepare = ModelInput(anatomy)

    def act(images):
        with torch.no_grad():
            return read_features(net, block, "mlp", prepare(images))[:, PLANTED]

    random_imgs = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    baseline = max(act(random_imgs).max().item(), act(natural_like_images()).max().item())
    out = render(net, anatomy, block, "mlp", [PLANTED], Recipe(steps=60, jitter=4), [PLANTED], "cpu")
    final = out.act_final[0].item()
    print(f"planted unit: random/natural max {baseline:.3f}, init {out.act_init[0]:.3f}, final {final:.3f}")
    assert final > 3.0 * max(baseline, 0.5), (final, baseline)
    assert final > out.act_init[0].item() + 2.0
    # The image shows the pattern the unit was built for: red, with no green or blue.
    r, g, b = out.images[0].mean(dim=(1, 2)).tolist()
    assert r > 0.8 and g < 0.2 and b < 0.2, (r, g, b)


def test_engine_settings_are_checked_and_resolved_per_device(monkeypatch):
    with pytest.raises(SweepError, match="Engine.precision: input should be 'auto', 'fp32' or 'bf16'; got 'fp16'"):
        Engine(precision="fp16")
    with pytest.raises(SweepError, match="Engine.compile: input should be 'auto', 'on', 'off' or 'step'; got 'yes'"):
        Engine(compile="yes")
    with pytest.raises(SweepError, match="Engine.features_per_pass: input should be greater than or equal to 1"):
        Engine(features_per_pass=0)
    monkeypatch.setattr("sweep.method.engine.native_bf16", lambda device: False)
    assert Engine().resolved(torch.device("cpu")) == Engine("fp32", "off", CPU_FEATURES_PER_PASS, adam="foreach")
    assert Engine().resolved(torch.device("cuda")) == Engine("fp32", "on", None, adam="foreach")
    monkeypatch.setattr("sweep.method.engine.native_bf16", lambda device: True)
    assert Engine().resolved(torch.device("cpu")) == Engine("bf16", "off", CPU_FEATURES_PER_PASS, adam="foreach")
    assert Engine().resolved(torch.device("cuda")) == Engine("bf16", "on", None, adam="foreach")
    assert Engine("fp32", "off", 8).resolved(torch.device("cuda")) == Engine("fp32", "off", 8, adam="foreach")
    step = Engine("bf16", "step", 8, compile_mode="reduce-overhead", adam="fused")
    assert step.resolved(torch.device("cuda")) == step  # explicit choices are kept
    with pytest.raises(SweepError, match="Engine.adam: input should be 'auto', 'foreach' or 'fused'; got 'sgd'"):
        Engine(adam="sgd")


def test_passes_that_fit_memory():
    mib = 2**20
    # 100 MiB fixed + 50 MiB per feature, 1000 MiB free at fraction 0.8 -> 800 MiB -> 14 features.
    peaks = {1: 150 * mib, 4: 300 * mib}
    assert passes_that_fit(peaks, 14, 1000 * mib, 0.8) == 14
    assert passes_that_fit(peaks, 20, 1000 * mib, 0.8) == 10   # two even passes of 10, not 14 + 6
    assert passes_that_fit(peaks, 20, 10 * mib, 0.8) == 1      # never below one feature


def test_bf16_autocast_on_cpu_records_fp32_clean_activations(micro):
    anatomy, net = micro
    block = anatomy.block(1)
    recipe = Recipe(steps=6, jitter=4)
    feats = [2, 9]
    fp32 = render(net, anatomy, block, "mlp", feats, recipe, seeds_for(feats), "cpu", engine=Engine("fp32"))
    bf16 = render(net, anatomy, block, "mlp", feats, recipe, seeds_for(feats), "cpu", engine=Engine("bf16"))
    assert bf16.engine.precision == "bf16" and fp32.engine.precision == "fp32"
    torch.testing.assert_close(bf16.act_init, fp32.act_init)  # same start, measured in fp32
    assert bf16.images.dtype == torch.float32
    diff = (bf16.images - fp32.images).abs()
    assert 0 < diff.mean() < 0.01, diff.mean()  # a few pixels move, the image stays


@pytest.mark.compile
def test_compiled_trunk_matches_eager_and_restores_the_network(micro):
    anatomy, net = micro
    block = anatomy.block(2)
    recipe = Recipe(steps=4, jitter=4)
    feats = [0, 5]
    eager = render(net, anatomy, block, "mlp", feats, recipe, seeds_for(feats), "cpu", engine=Engine("fp32"))
    compiled = render(net, anatomy, block, "mlp", feats, recipe, seeds_for(feats), "cpu",
                      engine=Engine("fp32", compile="on"))
    torch.testing.assert_close(compiled.images, eager.images, rtol=0, atol=1e-5)
    assert all(m._compiled_call_impl is None for m in net.modules())
    assert "_sweep_compiled" in vars(net.get_submodule("blocks.0"))    # compiled once, kept for later batches
    assert "_sweep_compiled" not in vars(net.get_submodule("blocks.2"))  # the hooked block stays eager
