"""BR-NPA's high-resolution recipe: stride reduction of ResNet stages and distillation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from sklearn_caf_torch.brnpa import BRNPAPool2d  # noqa: E402
from sklearn_caf_torch.highres import distillation_loss, reduce_stride  # noqa: E402


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: the stride is on conv1 and on the 1x1 shortcut."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity)


class SmallResNet(nn.Module):
    """A torchvision-free ResNet-10: stem (stride 2 + max-pool), 4 stages, BR-NPA head."""

    def __init__(self, n_classes=4, width=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2))
        self.layer3 = nn.Sequential(BasicBlock(2 * width, 4 * width, 2))
        self.layer4 = nn.Sequential(BasicBlock(4 * width, 8 * width, 2))
        self.pool = BRNPAPool2d(3)
        self.fc = nn.Linear(3 * 8 * width, n_classes)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)))


def test_reduce_stride_quadruples_the_resolution_and_keeps_weights():
    torch.manual_seed(0)
    teacher = SmallResNet().eval()
    x = torch.rand(2, 3, 64, 64)
    student = reduce_stride(teacher)  # layer3 and layer4, as in the paper
    assert teacher.features(x).shape[-2:] == (2, 2)
    assert student.features(x).shape[-2:] == (8, 8)
    assert reduce_stride(teacher, "layer4").features(x).shape[-2:] == (4, 4)
    assert student(x).shape == (2, 4)
    # A copy: the teacher keeps its strides; the weights are the teacher's.
    assert teacher.layer3[0].conv1.stride == (2, 2)
    assert teacher.layer3[0].downsample[0].stride == (2, 2)
    assert student.layer3[0].conv1.stride == (1, 1)
    assert student.layer3[0].downsample[0].stride == (1, 1)
    for (name, p), q in zip(
        teacher.state_dict().items(), student.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    # Stride 1 on the stem's pooling works too (odd kernel, padding 1).
    assert reduce_stride(teacher, ["maxpool"]).features(x).shape[-2:] == (4, 4)


def test_reduce_stride_errors():
    net = SmallResNet()
    with pytest.raises(ValueError, match="'layer9' is not a module of the model"):
        reduce_stride(net, "layer9")
    with pytest.raises(ValueError, match="'layer1' has no Conv2d"):
        reduce_stride(net, "layer1")
    with pytest.raises(ValueError, match="at least one stage"):
        reduce_stride(net, [])
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        reduce_stride(object())


def test_distillation_loss_matches_its_formula():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    alpha, temp = 0.3, 4.0
    p_t = torch.softmax(t / temp, 1).numpy()
    log_p_s = torch.log_softmax(s / temp, 1).numpy()
    kl = np.mean(np.sum(p_t * (np.log(p_t) - log_p_s), axis=1))
    ce = -np.mean(torch.log_softmax(s, 1).numpy()[np.arange(5), y.numpy()])
    expected = alpha * ce + (1 - alpha) * temp**2 * kl
    loss = distillation_loss(s, t, y, alpha=alpha, temperature=temp)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-12)
    assert distillation_loss(s, s, y, alpha=0.0, temperature=2.0).item() == pytest.approx(0.0)
    np.testing.assert_allclose(
        distillation_loss(s, t, y, alpha=1.0).item(), ce, rtol=1e-12
    )  # pure cross-entropy
    with pytest.raises(ValueError, match="alpha must be in"):
        distillation_loss(s, t, y, alpha=1.5)
    with pytest.raises(ValueError, match="temperature must be positive"):
        distillation_loss(s, t, y, temperature=0.0)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(s, t[:, :3], y)


def test_a_distillation_step_trains_only_the_student():
    torch.manual_seed(0)
    teacher = SmallResNet().eval()
    student = reduce_stride(teacher).train()
    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        teacher_logits = teacher(x)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    before = [p.detach().clone() for p in teacher.parameters()]
    loss = distillation_loss(student(x), teacher_logits, y, alpha=0.5, temperature=2.0)
    loss.backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))
    assert student.layer4[0].conv1.weight.grad.abs().sum() > 0
