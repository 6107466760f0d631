"""Exports (ONNX, traced TorchScript, torch.export .pt2) load back and match the model at batch sizes other than
the traced one; an export that does not is refused and nothing is written."""
import pytest
import torch
from torch import nn

from cbamlab.inference.export import CHECK_BATCHES, FORMATS, TRACE_BATCH, export_model, load_export
from cbamlab.errors import CbamlabError

pytestmark = pytest.mark.usefixtures("one_thread")
INPUT = (3, 8, 8)


class Tiny(nn.Module):
    """conv-BN-ReLU, a CBAM-like channel and spatial gate (mean/max pooling, sigmoid), pooled head."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.mlp = nn.Sequential(nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 6))
        self.spatial = nn.Conv2d(2, 1, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))  # (B, 6, H, W)
        x = x * torch.sigmoid(self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3))))[:, :, None, None]
        x = x * torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        return self.fc(x.mean((2, 3)))


def tiny():
    torch.manual_seed(0)
    m = Tiny()
    m.bn.running_mean.uniform_(-0.5, 0.5)  # eval-mode statistics that are not the identity
    m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_loads_back_and_matches_at_two_batch_sizes(tmp_path, fmt):
    model = tiny()
    out = tmp_path / f"model.{fmt}"
    diff = export_model(model, INPUT, out, fmt)
    assert 0.0 <= diff <= 1e-4 and out.stat().st_size > 1000
    run = load_export(out.read_bytes(), fmt)
    for batch in (1, 7):  # neither is the traced batch
        assert batch != TRACE_BATCH
        x = torch.randn(batch, *INPUT)
        with torch.no_grad():
            got, want = run(x), model(x)
        assert got.shape == (batch, 4)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_pt2_file_is_a_torch_export_program_with_a_symbolic_batch(tmp_path):
    export_model(tiny(), INPUT, tmp_path / "m.pt2", "pt2")
    program = torch.export.load(tmp_path / "m.pt2")
    batch = program.graph_signature.user_inputs[0]
    shape = next(n for n in program.graph.nodes if n.name == batch).meta["val"].shape
    assert isinstance(shape[0], torch.SymInt) and tuple(shape[1:]) == INPUT


def test_onnx_batch_axis_is_dynamic(tmp_path):
    import onnx

    export_model(tiny(), INPUT, tmp_path / "m.onnx", "onnx")
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    for value in (graph.input[0], graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"


class FrozenBatch(Tiny):
    """Reads the batch size as a Python int: a trace keeps the traced value, so other batch sizes break."""

    def forward(self, x):
        return super().forward(x)[: int(x.shape[0])]


def test_an_export_that_does_not_generalise_is_refused(tmp_path):
    model = FrozenBatch().eval()
    with pytest.raises(CbamlabError, match=rf"torchscript export gives shape \(2, 4\) at batch {CHECK_BATCHES[1]}"):
        export_model(model, INPUT, tmp_path / "m.pt", "torchscript")
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(CbamlabError, match=r"unknown export format 'tflite'; known: onnx, pt2, torchscript"):
        export_model(model, INPUT, tmp_path / "m.x", "tflite")
