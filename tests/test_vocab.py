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


def test_special_ids_from_config_and_tokenizer_checked_against_each_other():
    from liquid_train.vocab import resolve_special_ids

    # Llama 3 instruct: eos is a list in config.json, the tokenizer's eos is one of them
    ids, notes = resolve_special_ids({"bos": 128000, "eos": [128001, 128008, 128009], "pad": None},
                                     {"bos": ("<|begin_of_text|>", 128000), "eos": ("<|eot_id|>", 128009), "pad": None})
    assert ids == {"bos": 128000, "eos": 128009, "pad": 128009} and len(notes) == 1 and "no pad token" in notes[0]
    # Qwen2.5: no bos in the tokenizer, the config's is taken, silently
    ids, notes = resolve_special_ids({"bos": 151643, "eos": 151643, "pad": None},
                                     {"bos": None, "eos": ("<|endoftext|>", 151643), "pad": ("<|endoftext|>", 151643)})
    assert ids == {"bos": 151643, "eos": 151643, "pad": 151643} and notes == []
    # no tokenizer: the config alone; an eos list gives its first id
    assert resolve_special_ids({"bos": 2, "eos": [1, 107], "pad": 0}, None)[0] == {"bos": 2, "eos": 1, "pad": 0}
    with pytest.raises(ValueError, match="cfg.json has eos_token_id=497 but tok has eos_token '<|endoftext|>' at id 0"):
        resolve_special_ids({"bos": 497, "eos": 497, "pad": None}, {"eos": ("<|endoftext|>", 0)}, "cfg.json", "tok")
    with pytest.raises(ValueError, match="bos_token_id=1 but .* at id 5"):
        resolve_special_ids({"bos": 1, "eos": 2}, {"bos": ("<s>", 5), "eos": ("</s>", 2)})
    with pytest.raises(ValueError, match="no eos token"):
        resolve_special_ids({"bos": 1}, {"bos": ("<s>", 1)})
