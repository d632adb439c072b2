"""zaima.bot.nlu: intent classification of customer messages (no database).

The held-out file tests/bot/nlu_holdout.tsv is written separately from the training file with different
phrasings; the model must reach 0.9 overall on it and 0.75 on every intent.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from pathlib import Path

import pytest

from zaima.bot import nlu
from zaima.bot.nlu import DATA_PATH, INTENTS, IntentModel, Prediction, parse_examples
from zaima.bot.normalize import normalize

HOLDOUT = Path(__file__).parent / "nlu_holdout.tsv"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> IntentModel:
    return IntentModel.load(tmp_path_factory.mktemp("nlu-cache"))


def _holdout() -> list[tuple[str, str]]:
    return parse_examples(HOLDOUT.read_text(encoding="utf-8"))


# --- data files -------------------------------------------------------------------------------------


def test_training_data_covers_every_intent() -> None:
    examples = parse_examples(DATA_PATH.read_text(encoding="utf-8"))
    counts = collections.Counter(label for label, _ in examples)
    assert set(counts) == set(INTENTS)
    assert min(counts.values()) >= 60, counts
    texts = [text for _, text in examples]
    assert len(texts) == len(set(texts)), "duplicate training lines"


def test_holdout_is_separate_from_training() -> None:
    holdout = _holdout()
    counts = collections.Counter(label for label, _ in holdout)
    assert set(counts) == set(INTENTS)
    assert min(counts.values()) >= 15, counts
    training = {normalize(text) for _, text in parse_examples(DATA_PATH.read_text(encoding="utf-8"))}
    copied = [text for _, text in holdout if normalize(text) in training]
    assert copied == [], "held-out lines also in the training file"


def test_malformed_training_line_is_refused() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_examples("greeting\t在吗\nno tab here\n")
    with pytest.raises(ValueError, match="unknown intent"):
        IntentModel.train([("greeting", "在吗"), ("smalltalk", "天气")])


# --- accuracy ---------------------------------------------------------------------------------------


def test_holdout_accuracy(model: IntentModel) -> None:
    holdout = _holdout()
    right: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    misses = []
    for label, text in holdout:
        prediction = model.predict(text)
        total[label] += 1
        if prediction.intent == label:
            right[label] += 1
        else:
            misses.append((label, prediction.intent, round(prediction.confidence, 2), text))
    per_intent = {label: right[label] / total[label] for label in total}
    overall = sum(right.values()) / sum(total.values())
    assert overall >= 0.9, (overall, misses)
    weak = {label: acc for label, acc in per_intent.items() if acc < 0.75}
    assert not weak, (weak, misses)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        # the contract's examples table
        ("在吗", "greeting"),
        ("你好", "greeting"),
        ("有人吗", "greeting"),
        ("客服呢", "greeting"),
        ("我的订单发货了吗", "order_status"),
        ("订单什么状态", "order_status"),
        ("付了钱没收到卡密", "not_received"),
        ("充值还没到账", "not_received"),
        ("卡密提示已使用", "invalid_code"),
        ("激活码无效", "invalid_code"),
        ("我要退款", "refund"),
        ("能退吗", "refund"),
        ("不想要了", "refund"),
        ("扣款了订单还是未支付", "payment_issue"),
        ("重复扣费了", "payment_issue"),
        ("账号登不上", "account_issue"),
        ("号被封了", "account_issue"),
        ("绑定异常", "account_issue"),
        ("卡密在哪里兑换", "usage_howto"),
        ("怎么充值", "usage_howto"),
        ("退款规则是什么", "policy_question"),
        ("客服几点上班", "policy_question"),
        ("多久处理", "policy_question"),
        ("有人加我QQ说是客服 这是你们的吗", "contact_verify"),
        ("转人工", "human"),
        ("人工客服", "human"),
        ("我要找真人", "human"),
        ("骗子平台", "complaint"),
        ("我要投诉", "complaint"),
        ("什么破服务", "complaint"),
        ("谢谢", "thanks"),
        ("好了 解决了", "thanks"),
        ("今天天气怎么样", "other"),
        # the eval format's example turn
        ("付款半天了 卡密呢??", "not_received"),
        # a greeting followed by a problem is the problem (contract rule 12)
        ("在吗 付了钱没收到卡密", "not_received"),
        ("你好 我要退款", "refund"),
        ("亲 在不在 卡密提示已使用", "invalid_code"),
        # hard negatives: asking about the rule is not asking for the thing
        ("退款要多久到账 一般", "policy_question"),
        ("你们客服QQ多少", "policy_question"),
        ("怎么联系你们", "policy_question"),
        ("有人加我微信说是客服", "contact_verify"),
        ("凌晨有人吗", "policy_question"),
        # ids pasted inside the sentence, spelling noise
        ("订单K7Q3-9XDM-2PHT付了钱没到账", "not_received"),
        ("冲值木有到帐😡", "not_received"),
        ("卡蜜用不了 提示已使用", "invalid_code"),
        ("帳號登不上", "account_issue"),
        ("RG", "human"),
        ("tk", "refund"),
        ("K7Q3-9XDM-2PHT", "order_status"),  # a bare order number: "look at this order"
        ("我要打12315", "complaint"),
    ],
)
def test_targeted(model: IntentModel, text: str, intent: str) -> None:
    prediction = model.predict(text)
    assert prediction.intent == intent, prediction


# --- rules and the low-confidence answer ------------------------------------------------------------


@pytest.mark.parametrize("text", ["转人工", "人工", "rg", "RG!!", "人工客服？", "转 人工", "zrg"])
def test_rule_human(model: IntentModel, text: str) -> None:
    prediction = model.predict(text)
    assert (prediction.intent, prediction.source, prediction.confidence) == ("human", "rule", 1.0)


@pytest.mark.parametrize(
    "text",
    [
        "QQ 800012345 是你们客服吗",
        "这是你们的吗 shop.com.evil.top",
        "微信lanshan_kami是不是你们的",
        "13812345678 是官方的吗",
    ],
)
def test_rule_contact_verify(model: IntentModel, text: str) -> None:
    prediction = model.predict(text)
    assert (prediction.intent, prediction.source) == ("contact_verify", "rule")


def test_rule_contact_verify_needs_a_contact(model: IntentModel) -> None:
    # "是你们的问题" without a contact is not a contact check; the model decides
    assert model.predict("订单K7Q39XDM2PHT 没到账 是你们的问题吧").source == "model"


def test_empty_message(model: IntentModel) -> None:
    prediction = model.predict("")
    assert (prediction.intent, prediction.source, prediction.confidence) == ("other", "empty", 0.0)
    assert model.predict("   ").intent == "other"


def test_prediction_fields(model: IntentModel) -> None:
    prediction = model.predict("付款半天了 卡密呢？？？")
    assert isinstance(prediction, Prediction)
    assert prediction.normalized == "付款半天了 卡密呢?"
    assert set(prediction.scores) == set(INTENTS)
    assert sum(prediction.scores.values()) == pytest.approx(1.0)
    assert prediction.confidence == pytest.approx(max(prediction.scores.values()))
    assert prediction.top_intent == prediction.intent == "not_received"


def test_low_confidence_is_other_but_keeps_the_top_label(model: IntentModel) -> None:
    strict = dataclasses.replace(model, threshold=0.999)
    prediction = strict.predict("卡密好像有点问题")
    assert prediction.intent == "other"
    assert prediction.top_intent != "other"
    assert prediction.confidence < 0.999
    assert prediction.scores[prediction.top_intent] == prediction.confidence


def test_long_rant(model: IntentModel) -> None:
    rant = (
        "我在3月5号晚上十点多在你们店买了一张100块的王者荣耀点券卡，订单号K7Q3-9XDM-2PHT，付款是用支付宝付的，"
        "付完款页面显示成功了，可是我等了半个多小时卡密一直都没有发过来，邮箱也没有收到，打你们客服电话也没人接，"
    ) * 4 + "到现在还是没收到卡密"
    assert model.predict(rant).intent == "not_received"


# --- cache ------------------------------------------------------------------------------------------


def test_cache_is_reused(tmp_path: Path) -> None:
    first = IntentModel.load(tmp_path)
    assert not first.from_cache
    assert first.cache_path is not None and first.cache_path.parent == tmp_path
    mtime = first.cache_path.stat().st_mtime_ns
    second = IntentModel.load(tmp_path)
    assert second.from_cache
    assert second.cache_path == first.cache_path
    assert first.cache_path.stat().st_mtime_ns == mtime
    assert list(tmp_path.glob("*.npz")) == [first.cache_path]
    text = "付了钱没收到卡密"
    assert second.predict(text).scores == pytest.approx(first.predict(text).scores)


def test_changed_training_file_retrains(tmp_path: Path) -> None:
    data = tmp_path / "intents.tsv"
    data.write_bytes(DATA_PATH.read_bytes())
    cache = tmp_path / "cache"
    first = IntentModel.load(cache, data_path=data)
    assert not first.from_cache
    assert IntentModel.load(cache, data_path=data).from_cache
    with data.open("a", encoding="utf-8") as f:
        f.write("thanks\t好的 那我先下线了\n")
    changed = IntentModel.load(cache, data_path=data)
    assert not changed.from_cache
    assert changed.key != first.key
    assert changed.cache_path != first.cache_path


def test_unwritable_cache_dir_trains_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")
    model = IntentModel.load(blocker / "cache")
    assert not model.from_cache
    assert model.cache_path is None
    assert model.predict("我要退款").intent == "refund"


def test_corrupt_cache_file_retrains(tmp_path: Path) -> None:
    first = IntentModel.load(tmp_path)
    first.cache_path.write_bytes(b"not a numpy archive")
    again = IntentModel.load(tmp_path)
    assert not again.from_cache
    assert IntentModel.load(tmp_path).from_cache


def test_training_is_fast() -> None:
    examples = parse_examples(DATA_PATH.read_text(encoding="utf-8"))
    IntentModel.train(examples[::40])  # imports and jieba's dictionary load are not training
    started = time.perf_counter()
    IntentModel.train(examples)
    assert time.perf_counter() - started < 10.0  # about 0.3 s on an idle 2-core machine


def test_get_model_is_one_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nlu, "_model", None)
    monkeypatch.setenv("ZAIMA_CACHE_DIR", str(tmp_path))
    first = nlu.get_model()
    assert nlu.get_model() is first
    assert first.cache_path is not None and first.cache_path.parent == tmp_path


# --- latency ----------------------------------------------------------------------------------------


def test_latency(model: IntentModel) -> None:
    messages = [text for _, text in _holdout()]
    for text in messages:
        model.predict(text)
    timings = []
    for _ in range(3):
        for text in messages:
            started = time.perf_counter()
            model.predict(text)
            timings.append(time.perf_counter() - started)
    timings.sort()
    p50 = timings[len(timings) // 2]
    p99 = timings[int(len(timings) * 0.99) - 1]
    # target p99 < 2 ms (≈0.3 ms measured on an idle machine); slack for a loaded CI runner
    assert p50 < 1e-3, p50
    assert p99 < 10e-3, p99


def test_stale_cache_files_are_pruned(tmp_path: Path) -> None:
    stale = tmp_path / "intents-0123456789abcdef01234567.npz"
    fresh = tmp_path / "intents-fedcba9876543210fedcba98.npz"
    unrelated = tmp_path / "notes.txt"
    for f in (stale, fresh, unrelated):
        f.write_bytes(b"x")
    old = time.time() - 2 * nlu.STALE_CACHE_SECONDS
    os.utime(stale, (old, old))
    os.utime(unrelated, (old, old))
    model = IntentModel.load(tmp_path)
    assert model.cache_path.exists()
    assert not stale.exists()
    assert fresh.exists() and unrelated.exists()
