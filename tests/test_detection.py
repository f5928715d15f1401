from __future__ import annotations

import numpy as np
import torch

from workbench.detection import decode, default_boxes, encode, iou, nms, postprocess
from workbench.models.ssd import SSD300_VOC, SSD512_VOC
from workbench.registry import create_model


def test_prior_counts_match_paper():
    assert default_boxes(SSD300_VOC).shape == (8732, 4)
    assert default_boxes(SSD512_VOC).shape == (24564, 4)
    p = default_boxes(SSD300_VOC)
    assert p.min() >= 0 and p.max() <= 1
    # first location of conv4_3: min size 30/300, then sqrt(30*60)/300, then 2:1 and 1:2
    np.testing.assert_allclose(p[0], [4 / 300, 4 / 300, 0.1, 0.1], rtol=1e-5)
    np.testing.assert_allclose(p[1, 2], np.sqrt(0.1 * 0.2), rtol=1e-5)
    np.testing.assert_allclose(p[2, 2] / p[2, 3], 2.0, rtol=1e-5)


def test_encode_decode_roundtrip():
    pri = default_boxes(SSD300_VOC)[:100]
    boxes = np.clip(np.stack([pri[:, 0] - 0.05, pri[:, 1] - 0.04, pri[:, 0] + 0.06, pri[:, 1] + 0.05], 1), 0, 1)
    np.testing.assert_allclose(decode(encode(boxes, pri), pri), boxes, atol=1e-5)


def test_nms_suppresses_overlaps():
    b = np.array([[0, 0, 1, 1], [0.01, 0, 1, 1], [2, 2, 3, 3]], np.float32)
    s = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(b, s, 0.45, 10).tolist() == [0, 2]
    assert iou(b[:1], b[1:2])[0, 0] > 0.98


def test_postprocess_on_model_output():
    m = create_model("ssd-tiny", num_classes=4)
    loc, conf = m(torch.randn(1, 3, 128, 128))
    pri = default_boxes(m.priors)
    assert pri.shape[0] == loc.shape[1]
    conf = np.zeros_like(conf.detach().numpy()[0])  # uniform: 0.25 per class
    conf[5, 2] = 50.0  # one confident box of class 2
    det = postprocess(loc.detach().numpy()[0], conf, pri, score_threshold=0.5)
    assert det.labels.tolist() == [2] and det.scores[0] > 0.99
