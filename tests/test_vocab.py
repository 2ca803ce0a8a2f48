import numpy as np
import pytest

from liquid_train.vocab import LiquidVocab, default_test_vocab


def test_codes_round_trip_and_padding():
    vocab = default_test_vocab(base_vocab_size=1000, num_image_tokens=64)
    codes = np.arange(64)
    ids = vocab.codes_to_ids(codes)
    assert ids.min() == 1000 and ids.max() == 1063
    assert np.array_equal(vocab.ids_to_codes(ids), codes)
    assert vocab.is_image_id(ids).all() and not vocab.is_image_id(np.array([vocab.boi_id, 999])).any()
    assert vocab.padded_vocab_size(1) % 128 == 0 and vocab.padded_vocab_size(1) >= vocab.vocab_size
    assert vocab.padded_vocab_size(4) % 512 == 0


def test_save_load(tmp_path):
    vocab = default_test_vocab()
    vocab.save(str(tmp_path))
    assert LiquidVocab.load(str(tmp_path)) == vocab


def test_rejects_overlapping_specials():
    with pytest.raises(ValueError, match="collides"):
        LiquidVocab(base_vocab_size=10, image_token_offset=10, num_image_tokens=4, vocab_size=17,
                    boi_id=11, eoi_id=15, uncond_id=16, bos_id=1, eos_id=2, pad_id=0)
    with pytest.raises(ValueError, match="image codes"):
        default_test_vocab().codes_to_ids(np.array([64]))
