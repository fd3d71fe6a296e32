"""TensorBoard event files written without TensorFlow read back with tensorboard's own reader."""

from tensorboard.backend.event_processing import event_accumulator  # test extra

from resrank_jax.train.tensorboard import ScalarWriter, crc32c


def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_scalars_read_back_with_tensorboard(tmp_path):
    writer = ScalarWriter(tmp_path)
    for step in range(1, 4):
        writer.scalars(step, {"loss": 1.0 / step, "loss/rank": 0.5 * step})
    writer.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "loss/rank"}
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [round(e.value, 6) for e in loss] == [1.0, 0.5, round(1 / 3, 6)]
    assert [e.value for e in acc.Scalars("loss/rank")] == [0.5, 1.0, 1.5]
