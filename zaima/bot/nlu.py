"""Intent classification for customer messages (the 14 labels of the bot contract).

Pipeline: ``normalize`` (normalize.py) → ids and numbers folded into placeholder characters (an order
number is Ⓞ, a phone Ⓟ, a URL Ⓤ, …, so the model learns "a pasted order number" rather than one
particular number) → two sparse TF-IDF blocks with sublinear tf, each L2-normalised: jieba tokens with a
small domain dictionary (unigrams and bigrams) and character 1–3-grams, plus two whole-message flags
(nothing about the shop at all; a time of day or week) → multinomial logistic regression.

A short rule layer runs first for the unambiguous cases (an empty message; a message that is only a
request for a person; a pasted contact with an explicit "is this yours?"). Below `THRESHOLD` the answer
is ``other``; the model's own top label stays in ``Prediction.top_intent``.

Training uses scikit-learn once (a second or two) on ``data/intents.tsv``; the result is cached on disk
as plain arrays (``.npz``, loaded with ``allow_pickle=False``, so a tampered cache file cannot run code)
under a key made of the training file, this module's and normalize.py's source, and the jieba version. So
a changed training file or feature code retrains, and prediction needs only numpy and jieba, not sklearn.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zaima.bot.normalize import normalize
from zaima.bot.slots import extract_slots

log = logging.getLogger("zaima.bot.nlu")

INTENTS: tuple[str, ...] = (
    "greeting", "order_status", "not_received", "invalid_code", "refund", "payment_issue", "account_issue",
    "usage_howto", "policy_question", "contact_verify", "human", "complaint", "thanks", "other",
)
DATA_PATH = Path(__file__).parent / "data" / "intents.tsv"
FEATURE_VERSION = "3"
# Below this probability the answer is "other" (tuned by cross-validation on the training file).
THRESHOLD = 0.40
C = 20.0  # inverse regularisation of the logistic regression (tuned by cross-validation)
CHAR_WEIGHT = 1.4  # weight of the character block relative to the word block (tuned by cross-validation)
FLAG_WEIGHT = 0.6  # value of a present whole-message flag (see FLAGS)
# A long rant is classified by its head and its tail (the problem tends to come first, the demand or the
# threat last): bounds the latency of a pasted essay.
HEAD_CHARS, TAIL_CHARS = 240, 120

DOMAIN_WORDS = (
    "卡密", "直充", "代充", "到账", "未到账", "没到账", "不到账", "转人工", "人工客服", "真人客服", "激活码",
    "兑换码", "授权码", "序列号", "点券", "点卡", "退款", "退钱", "封号", "被封", "卡盟", "发卡网", "订单号",
    "充值", "已使用", "已被使用", "被使用", "无效", "扣款", "扣费", "多扣", "重复扣款", "支付宝", "微信",
    "官方客服", "投诉", "骗子", "黑店", "售后", "发货", "补发", "秒到", "话费", "q币", "会员", "月卡",
    "登不上", "登不进", "绑定", "解绑", "冻结", "找回", "改密", "实名", "验证码", "查询密码", "未支付",
    "已支付", "支付失败", "工作时间", "上班", "下班", "机器人", "在吗", "有人吗", "在不在", "谢谢",
    "解决了", "搞定了", "好评", "差评", "消协", "举报", "报警", "骗钱", "退款规则", "售后规则", "是不是",
    "冒充", "官方", "官网", "客服", "人工",
)

# Placeholders for ids and numbers (applied to normalized, lower-case text).
_PLACEHOLDERS = re.compile(
    r"(?P<keep>(?<![0-9])(?:12315|315)(?![0-9]))"  # the consumer-complaint hotline is a word, not a number
    r"|(?P<url>(?:https?://|www\.)[^\s\u3000-\u303f\u3400-\u9fff\uff00-\uffef]+"
    r"|(?<![a-z0-9._@-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:com|net|org|cn|top|xyz|cc|vip|shop|site|club|"
    r"info|io|me|co|app|link|online|fun|ltd|icu|wang|ink|tk|live|pro|biz|cloud)(?![a-z0-9])(?:/[\x21-\x7e]*)?)"
    r"|(?P<email>[a-z0-9][a-z0-9._%+-]*@[a-z0-9-]+(?:\.[a-z0-9-]+)+)"
    r"|(?P<order>(?<![a-z0-9_])(?=[a-z0-9 -]{12,14}(?![a-z0-9]))(?=[ -]*[0-9a-z]*[a-z])(?=[ -]*[0-9a-z]*[0-9])"
    r"[0-9a-z]{4}[ -]?[0-9a-z]{4}[ -]?[0-9a-z]{4}(?![a-z0-9_]))"
    r"|(?P<phone>(?<![0-9])(?:\+?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]){8}(?![0-9]))"
    r"|(?P<id>(?<![a-z0-9_-])(?=[a-z0-9_-]*[0-9])(?=[a-z0-9_-]*[a-z_])[a-z][a-z0-9_-]{4,}(?![a-z0-9_-])"
    r"|(?<![a-z0-9_-])[a-z]+_[a-z0-9_]+)"
    r"|(?P<num>[0-9]{5,})"
    r"|(?P<small>[0-9]+(?:\.[0-9]+)?)"
)
_MARK = {"url": "Ⓤ", "email": "Ⓔ", "order": "Ⓞ", "phone": "Ⓟ", "id": "Ⓦ", "num": "Ⓝ", "small": "Ⓓ"}
_CJK_SPACE = re.compile(r"(?<=[\u3400-\u9fff]) (?=[\u3400-\u9fff])")


def _placeholder(m: re.Match[str]) -> str:
    return m.group(0) if m.lastgroup == "keep" else _MARK[m.lastgroup]


def model_text(normalized: str) -> str:
    """What the features are computed from: placeholders for ids and numbers, no spaces between hanzi."""
    if len(normalized) > HEAD_CHARS + TAIL_CHARS:
        normalized = f"{normalized[:HEAD_CHARS]} {normalized[-TAIL_CHARS:]}"
    text = _PLACEHOLDERS.sub(_placeholder, normalized)
    return _CJK_SPACE.sub("", text)


_tokenizer_lock = threading.Lock()
_tokenizer = None


def _jieba():
    global _tokenizer
    if _tokenizer is None:
        with _tokenizer_lock:
            if _tokenizer is None:
                import jieba

                logging.getLogger("jieba").setLevel(logging.WARNING)
                jieba.setLogLevel(logging.WARNING)
                tokenizer = jieba.Tokenizer()  # our own instance: the global one stays as others left it
                tokenizer.initialize()
                for word in DOMAIN_WORDS:
                    tokenizer.add_word(word, freq=20000)
                _tokenizer = tokenizer
    return _tokenizer


# Two whole-message cues a bag of n-grams misses. "Nothing about the shop": no word of the domain at all
# (怎么化妆 is not usage_howto, 多久能瘦十斤 is not policy_question). "A time of day/week": 凌晨有人吗 asks
# for service hours, 有人吗 is a greeting.
_DOMAIN = re.compile(
    r"[卡码号单付钱充退扣款账货封绑骗赔换ⓄⓅⓊⒺⓌⓃ]|客服|人工|真人|机器人|售后|发|到|激活|兑换|登|投诉|q币|qq|点券|会员|支付|"
    r"微信|规则|政策|上班|下班|官方|官网|联系|平台|店|老板|商家|key|cdk|steam|充值|密|用|买|订"
)
_TIME = re.compile(
    r"几点|凌晨|半夜|深夜|晚上(?!好)|早上(?!好)|中午(?!好)|下午(?!好)|周末|周[一二三四五六日天]|星期|礼拜|节假日|"
    r"过年|春节|国庆|放假|假期|过节|下班后|Ⓓ小时|全天|时间|多久|几天|几分钟|几个小时"
)


def word_features(text: str) -> list[str]:
    tokens = [t for t in _jieba().lcut(text, HMM=False) if not t.isspace()]
    grams = [f"w:{t}" for t in tokens]
    grams += [f"b:{a}|{b}" for a, b in zip(["^", *tokens], [*tokens, "$"], strict=True)]
    return grams


FLAGS = ("nodomain", "time")


def flag_features(text: str) -> list[int]:
    """Indices into FLAGS of the whole-message cues present in a model_text."""
    flags = []
    if not _DOMAIN.search(text):
        flags.append(0)
    if _TIME.search(text):
        flags.append(1)
    return flags


def char_features(text: str) -> list[str]:
    text = f"^{text}$"
    n = len(text)
    return [text[i : i + k] for k in (1, 2, 3) for i in range(n - k + 1) if not (k == 1 and text[i] in "^$")]


# --- rules ------------------------------------------------------------------------------------------
_STRIP = re.compile(r"[\s!?.,;:~^*#=+|\\\"'()\[\]<>😡😭👍😊😂🙏-]+")
_HUMAN_ONLY = frozenset({
    "人工", "转人工", "人工客服", "转人工客服", "真人", "真人客服", "找人工", "要人工", "我要人工", "我要转人工",
    "人工服务", "转人工服务", "请转人工", "客服人工", "人工人工", "转真人", "找真人", "我要真人", "接人工",
    "给我转人工", "帮我转人工", "人工呢", "快转人工", "马上转人工", "我要人工客服", "找人工客服",
})
# "is this (contact) yours / official / your customer service?"
_IS_IT_YOURS = re.compile(
    r"(是不是|是否是?|是)(你们|你家|贵店|本店|贵司|贵平台|官方|正规|真的|这家店)(家|的|店|平台)?"
    r"(官方|正规)?(的)?(客服|人|号|账号|网站|网址|链接|店|微信|qq|电话|邮箱|联系方式|吗|么|嘛|呢|\?|$)"
)


@dataclass(frozen=True)
class Prediction:
    intent: str  # the answer: "other" when the model's confidence is below the threshold
    confidence: float  # probability of `top_intent` (1.0 for a rule)
    scores: dict[str, float]  # probability per intent
    normalized: str  # the normalized text the decision was made on
    top_intent: str = ""  # the model's best label, even when `intent` fell back to "other"
    source: str = "model"  # "model", "rule" or "empty"


@dataclass
class IntentModel:
    classes: list[str]
    word_vocab: dict[str, int]
    word_idf: np.ndarray
    char_vocab: dict[str, int]
    char_idf: np.ndarray
    coef: np.ndarray  # (n_word + n_char + n_flags, n_classes)
    intercept: np.ndarray  # (n_classes,)
    threshold: float = THRESHOLD
    key: str = ""
    from_cache: bool = False  # loaded from the disk cache rather than trained in this process
    train_seconds: float = 0.0
    cache_path: Path | None = None

    # --- loading and training ---------------------------------------------------------------------
    @classmethod
    def load(cls, cache_dir: Path | str | None = None, *, data_path: Path | str | None = None) -> IntentModel:
        """The model for the training file, from the disk cache when it is there, else trained (and cached
        when `cache_dir` is writable; in memory only otherwise)."""
        data_path = Path(data_path) if data_path else DATA_PATH
        data = data_path.read_bytes()
        key = cache_key(data)
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = directory / f"intents-{key[:24]}.npz"
        if path.exists():
            try:
                model = cls._read(path, key)
                model.cache_path = path
                return model
            except (OSError, ValueError, KeyError) as exc:
                log.warning("intent model cache %s unreadable (%s); retraining", path, exc)
        model = cls.train(parse_examples(data.decode("utf-8")))
        model.key = key
        try:
            directory.mkdir(parents=True, exist_ok=True)
            model._write(path)
            model.cache_path = path
        except OSError as exc:
            log.warning("intent model cache dir %s not writable (%s); model kept in memory only", directory, exc)
        else:
            _prune(directory, keep=path)
        return model

    @classmethod
    def train(cls, examples: list[tuple[str, str]], *, c: float = C, threshold: float = THRESHOLD) -> IntentModel:
        from sklearn.linear_model import LogisticRegression

        started = time.perf_counter()
        labels = sorted({label for label, _ in examples})
        unknown = set(labels) - set(INTENTS)
        if unknown:
            raise ValueError(f"unknown intent labels in training data: {sorted(unknown)}")
        texts = [model_text(normalize(text)) for _, text in examples]
        word_vocab, word_idf = _fit_block([word_features(t) for t in texts])
        char_vocab, char_idf = _fit_block([char_features(t) for t in texts])
        model = cls(labels, word_vocab, word_idf, char_vocab, char_idf,
                    np.zeros((len(word_vocab) + len(char_vocab) + len(FLAGS), len(labels))), np.zeros(len(labels)),
                    threshold=threshold)
        x = model._matrix(texts)
        y = np.array([labels.index(label) for label, _ in examples])
        clf = LogisticRegression(C=c, solver="newton-cg", max_iter=500, class_weight="balanced")
        clf.fit(x, y)
        model.coef = np.ascontiguousarray(clf.coef_.T)
        model.intercept = clf.intercept_.copy()
        model.train_seconds = time.perf_counter() - started
        return model

    def _write(self, path: Path) -> None:
        arrays = {
            "key": np.array(self.key),
            "classes": np.array(self.classes),
            "word_terms": np.array(sorted(self.word_vocab, key=self.word_vocab.__getitem__)),
            "word_idf": self.word_idf,
            "char_terms": np.array(sorted(self.char_vocab, key=self.char_vocab.__getitem__)),
            "char_idf": self.char_idf,
            "coef": self.coef,
            "intercept": self.intercept,
            "threshold": np.array(self.threshold),
            "train_seconds": np.array(self.train_seconds),
        }
        fd, tmp = tempfile.mkstemp(prefix=".intents-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def _read(cls, path: Path, key: str) -> IntentModel:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                raise ValueError("cache key mismatch")
            n_features = len(z["word_terms"]) + len(z["char_terms"]) + len(FLAGS)
            if z["coef"].shape != (n_features, len(z["classes"])) or z["intercept"].shape != (len(z["classes"]),):
                raise ValueError("cache arrays have inconsistent shapes")
            return cls(
                [str(c) for c in z["classes"]],
                {str(t): i for i, t in enumerate(z["word_terms"])},
                z["word_idf"],
                {str(t): i for i, t in enumerate(z["char_terms"])},
                z["char_idf"],
                np.ascontiguousarray(z["coef"]),
                z["intercept"],
                threshold=float(z["threshold"]),
                key=key,
                from_cache=True,
                train_seconds=float(z["train_seconds"]),
            )

    # --- features -------------------------------------------------------------------------------------
    def _vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(feature indices, values) of a model_text: the word and character tf-idf blocks, each
        L2-normalised and weighted, then the flags."""
        offset = len(self.word_vocab)
        idx: list[int] = []
        val: list[float] = []
        for grams, vocab, idf, base, weight in (
            (word_features(text), self.word_vocab, self.word_idf, 0, 1.0),
            (char_features(text), self.char_vocab, self.char_idf, offset, CHAR_WEIGHT),
        ):
            start = len(val)
            for gram, count in Counter(grams).items():
                j = vocab.get(gram)
                if j is not None:
                    idx.append(base + j)
                    val.append((1.0 + math.log(count)) * idf[j])
            norm = math.sqrt(sum(v * v for v in val[start:]))
            if norm:
                for i in range(start, len(val)):
                    val[i] = val[i] / norm * weight
        base = offset + len(self.char_vocab)
        for k in flag_features(text):
            idx.append(base + k)
            val.append(FLAG_WEIGHT)
        return np.array(idx, dtype=np.intp), np.array(val)

    def _matrix(self, texts: list[str]):
        from scipy.sparse import csr_matrix

        indptr, indices, values = [0], [], []
        for text in texts:
            i, v = self._vector(text)
            indices.extend(i.tolist())
            values.extend(v.tolist())
            indptr.append(len(indices))
        return csr_matrix((values, indices, indptr), shape=(len(texts), self.coef.shape[0]))

    # --- prediction ------------------------------------------------------------------------------------
    def probabilities(self, normalized: str) -> np.ndarray:
        idx, val = self._vector(model_text(normalized))
        z = self.intercept + (val @ self.coef[idx] if len(idx) else 0.0)
        z = np.exp(z - z.max())
        return z / z.sum()

    def predict(self, text: str) -> Prediction:
        normalized = normalize(text or "")
        rule = _rule(normalized, text or "")
        if rule is not None:
            intent, source = rule
            scores = {c: (1.0 if c == intent else 0.0) for c in self.classes}
            return Prediction(intent, 1.0 if source == "rule" else 0.0, scores, normalized, intent, source)
        p = self.probabilities(normalized)
        best = int(p.argmax())
        top = self.classes[best]
        confidence = float(p[best])
        intent = top if confidence >= self.threshold else "other"
        scores = {c: float(s) for c, s in zip(self.classes, p, strict=True)}
        return Prediction(intent, confidence, scores, normalized, top, "model")


def _rule(normalized: str, raw: str) -> tuple[str, str] | None:
    bare = _STRIP.sub("", normalized)
    if not normalized:
        return "other", "empty"
    if bare in _HUMAN_ONLY:
        return "human", "rule"
    if _IS_IT_YOURS.search(normalized) and extract_slots(raw).contacts():
        return "contact_verify", "rule"
    return None


STALE_CACHE_SECONDS = 3600


def _prune(directory: Path, keep: Path) -> None:
    """Drop models of other training files or code versions untouched for an hour (a running process
    has its model in memory already; a restarted one of an old version just retrains)."""
    cutoff = time.time() - STALE_CACHE_SECONDS
    for other in directory.glob("intents-*.npz"):
        try:
            if other != keep and other.stat().st_mtime < cutoff:
                other.unlink()
        except OSError:
            pass


def _fit_block(docs: list[list[str]]) -> tuple[dict[str, int], np.ndarray]:
    """Vocabulary and smoothed idf (as scikit-learn's TfidfVectorizer computes it)."""
    df: Counter[str] = Counter()
    for grams in docs:
        df.update(set(grams))
    terms = sorted(df)
    n = len(docs)
    idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in terms])
    return {t: i for i, t in enumerate(terms)}, idf


def parse_examples(text: str) -> list[tuple[str, str]]:
    """(label, text) pairs of a TSV file: `label<TAB>text`, blank lines and `#` comments skipped."""
    examples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        label, sep, message = line.partition("\t")
        if not sep or not message.strip():
            raise ValueError(f"line {number}: expected 'label<TAB>text', got {line!r}")
        examples.append((label.strip(), message.strip()))
    return examples


def cache_key(data: bytes) -> str:
    import jieba

    h = hashlib.sha256()
    for part in (
        FEATURE_VERSION.encode(),
        jieba.__version__.encode(),
        repr((THRESHOLD, C, CHAR_WEIGHT, FLAG_WEIGHT, FLAGS, HEAD_CHARS, TAIL_CHARS, DOMAIN_WORDS)).encode(),
        Path(__file__).read_bytes(),
        (Path(__file__).parent / "normalize.py").read_bytes(),
        data,
    ):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def default_cache_dir() -> Path:
    configured = os.environ.get("ZAIMA_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "zaima"


_model: IntentModel | None = None
_model_lock = threading.Lock()


def get_model(cache_dir: Path | str | None = None) -> IntentModel:
    """One model per process, loaded (or trained) on first use; `cache_dir` counts on that first call only
    (default: $ZAIMA_CACHE_DIR, else $XDG_CACHE_HOME/zaima or ~/.cache/zaima)."""
    global _model
    if _model is None:
        with _model_lock:
            if _model is None:
                _model = IntentModel.load(cache_dir)
    return _model
