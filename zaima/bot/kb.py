"""Knowledge-base retrieval: rank articles for a customer's question. Pure computation, no database.

Customers write short, colloquial, typo-ridden Chinese ("冲值多久到帐", "km提示错误"). Each article is
indexed as several short documents (its title and each question variant) plus its answer at a lower
weight, and scored with BM25 over two token streams at once: jieba words (search-mode cut) and
character bigrams. Bigrams match what jieba segments wrongly ("直充填错" → 直/充填/错) and half of a
mistyped word; words keep whole-term matches sharp. An article scores its best question, plus a quarter
of the mean of its other matching questions ("blend"), plus 0.3 of its answer's score.
tests/bot/kb_eval measures the alternatives (words only, bigrams only, TF-IDF cosine, max only, other
k1/b/weights); the defaults here won there.

Scores are normalised to 0–1: the share of the query's weight (IDF) that the best document matched.
Words the knowledge base has never seen count against the score, so an off-topic question ("今天天气
怎么样") scores low and the caller can say it does not know instead of answering nonsense.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import jieba

try:  # traditional → simplified Chinese; optional (zhconv is a small pure-Python table)
    import zhconv
except ImportError:  # pragma: no cover - depends on the environment
    zhconv = None

jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict…" chatter on stderr

METHODS = ("bm25", "tfidf")
TOKENIZERS = ("words", "chars", "mixed")

# Below this normalised score the caller should not answer (tuned on tests/bot/kb_eval: the highest
# off-topic question there scores 0.145; 78% of the questions ranked right score above 0.18).
DEFAULT_THRESHOLD = 0.18

# Pinyin initials customers type for frequent words, as whole ASCII tokens only ("tk", never "stk").
ABBREVIATIONS = {
    "tk": "退款", "kf": "客服", "km": "卡密", "zfb": "支付宝", "wx": "微信", "vx": "微信", "cz": "充值",
    "fp": "发票", "zh": "账号",
}
# Frequent typos and variant characters, corrected before tokenising.
TYPOS = {
    "冲值": "充值", "直冲": "直充", "到帐": "到账", "帐号": "账号", "帐户": "账户", "卡蜜": "卡密", "点卷": "点券",
    "秘钥": "密钥", "登陆": "登录",
}
# Function words that say nothing about which article is meant.
STOPWORDS = frozenset(
    "的 了 吗 呢 啊 吧 呀 哦 嗯 么 嘛 哈 啦 是 在 有 我 你 他 她 它 我们 你们 他们 这 那 这个 那个 就 都 还 也 和 与 "
    "或 及 被 把 给 让 请 请问 一下 一个 下 能 可以 可 会 要 想 得 地 着 过 个 亲 您 怎么 怎么办 怎样 如何 什么 啥 咋 "
    "为什么 为啥 吗 不 没 没有 能不能 可不可以 是不是 呢 哪 哪里 哪儿 多少 几".split()
)
_ASCII_RUN = re.compile(r"[a-z0-9]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_TOKEN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z0-9]+")
_CHAR_TAG = "\x01"  # keeps character bigrams apart from jieba words in the vocabulary


def normalize(text: str) -> str:
    """NFKC (full-width → half-width), lower case, simplified Chinese, known typos and abbreviations."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    if zhconv is not None:
        text = zhconv.convert(text, "zh-cn")
    for wrong, right in TYPOS.items():
        text = text.replace(wrong, right)
    return _ASCII_RUN.sub(lambda m: ABBREVIATIONS.get(m.group(0), m.group(0)), text)


def word_tokens(text: str) -> list[str]:
    """jieba's search-mode cut (long words and their parts), without stopwords and punctuation."""
    tokens = []
    for token in jieba.cut_for_search(text):
        token = token.strip()
        if token and token not in STOPWORDS and _TOKEN_RUN.fullmatch(token):
            tokens.append(token)
    return tokens


def char_tokens(text: str) -> list[str]:
    """Bigrams inside each run of Chinese characters (a lone character stands for itself), and each
    run of letters or digits as one token ("steam", "60")."""
    tokens = []
    for run in _TOKEN_RUN.findall(text):
        if not _CJK.fullmatch(run):
            tokens.append(_CHAR_TAG + run)
        elif len(run) == 1:
            if run not in STOPWORDS:
                tokens.append(_CHAR_TAG + run)
        else:
            tokens.extend(_CHAR_TAG + run[i:i + 2] for i in range(len(run) - 1))
    return tokens


def tokenize(text: str, tokens: str = "mixed") -> list[str]:
    text = normalize(text)
    if tokens == "words":
        return word_tokens(text)
    if tokens == "chars":
        return char_tokens(text)
    if tokens == "mixed":
        return word_tokens(text) + char_tokens(text)
    raise ValueError(f"unknown tokenizer {tokens!r}; one of {TOKENIZERS}")


class Ranker:
    """Ranks articles `{"id", "title", "questions": [...], "answer"}` for a question.

    Ids are returned as given (any value; they are never hashed or compared). Build once per set of
    articles: indexing tokenises everything, ranking only walks the query's posting lists.
    """

    def __init__(self, articles: Iterable[Mapping[str, Any]], *, method: str = "bm25", tokens: str = "mixed",
                 k1: float = 1.2, b: float = 0.5, answer_weight: float = 0.3, aggregate: str = "blend"):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; one of {METHODS}")
        if aggregate not in ("max", "blend"):
            raise ValueError("aggregate is 'max' or 'blend'")
        self.method, self.tokens, self.k1, self.b = method, tokens, k1, b
        self.answer_weight, self.aggregate = answer_weight, aggregate
        self.ids: list[Any] = []
        # Short documents: the title and each question. Long ones: the answers, one per article.
        self._short: list[tuple[int, Counter]] = []
        self._answers: list[Counter] = []
        df: Counter = Counter()  # in how many articles a term occurs (any field)
        for article in articles:
            index = len(self.ids)
            self.ids.append(article["id"])
            texts = [article.get("title") or ""] + [q for q in article.get("questions") or [] if q]
            seen: set[str] = set()
            for text in texts:
                counts = Counter(tokenize(text, tokens))
                if counts:
                    self._short.append((index, counts))
                    seen.update(counts)
            answer = Counter(tokenize(article.get("answer") or "", tokens))
            self._answers.append(answer)
            df.update(seen | set(answer))
        n = len(self.ids)
        self._n = n
        # Lucene's BM25 IDF (never negative); an unseen term weighs like one in no article at all.
        self.idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        self.unseen_idf = math.log(1 + (n + 0.5) / 0.5)
        self._avg_short = (sum(sum(c.values()) for _, c in self._short) / len(self._short)) if self._short else 1.0
        self._avg_answer = (sum(sum(c.values()) for c in self._answers) / n) if n else 1.0
        self._short_len = [sum(c.values()) for _, c in self._short]
        self._answer_len = [sum(c.values()) for c in self._answers]
        self._short_postings = self._postings(c for _, c in self._short)
        self._answer_postings = self._postings(self._answers)
        if method == "tfidf":
            self._short_norms = [self._tfidf_norm(c) for _, c in self._short]
            self._answer_norms = [self._tfidf_norm(c) for c in self._answers]

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def _postings(docs: Iterable[Counter]) -> dict[str, list[tuple[int, int]]]:
        postings: dict[str, list[tuple[int, int]]] = {}
        for doc, counts in enumerate(docs):
            for term, tf in counts.items():
                postings.setdefault(term, []).append((doc, tf))
        return postings

    # --- scoring -------------------------------------------------------------------------------

    def _bm25(self, terms: set[str], postings, lengths, avg: float) -> dict[int, float]:
        scores: dict[int, float] = {}
        k1, b = self.k1, self.b
        for term in terms:
            idf = self.idf.get(term)
            if idf is None:
                continue
            for doc, tf in postings.get(term, ()):
                norm = k1 * (1 - b + b * lengths[doc] / avg)
                scores[doc] = scores.get(doc, 0.0) + idf * tf * (k1 + 1) / (tf + norm)
        return scores

    def _tfidf_weight(self, term: str, tf: int) -> float:
        return (1 + math.log(tf)) * self.idf.get(term, self.unseen_idf)

    def _tfidf_norm(self, counts: Counter) -> float:
        return math.sqrt(sum(self._tfidf_weight(t, tf) ** 2 for t, tf in counts.items())) or 1.0

    def _tfidf(self, query: Counter, postings, norms) -> dict[int, float]:
        qnorm = self._tfidf_norm(query)
        scores: dict[int, float] = {}
        for term, qtf in query.items():
            qw = self._tfidf_weight(term, qtf)
            for doc, tf in postings.get(term, ()):
                scores[doc] = scores.get(doc, 0.0) + qw * self._tfidf_weight(term, tf)
        return {doc: s / (qnorm * norms[doc]) for doc, s in scores.items()}

    def scores(self, query: str) -> list[float]:
        """One normalised score (0–1) per article, in the order the articles were given."""
        counts = Counter(tokenize(query, self.tokens))
        result = [0.0] * self._n
        if not counts:
            return result
        if self.method == "tfidf":
            short = self._tfidf(counts, self._short_postings, self._short_norms)
            answers = self._tfidf(counts, self._answer_postings, self._answer_norms)
            scale = 1.0
        else:
            terms = set(counts)
            short = self._bm25(terms, self._short_postings, self._short_len, self._avg_short)
            answers = self._bm25(terms, self._answer_postings, self._answer_len, self._avg_answer)
            # A perfect match of every query term in an average-length question scores the sum of
            # their IDFs: that is 1.0.
            scale = sum(self.idf.get(t, self.unseen_idf) for t in terms)
        best: dict[int, float] = {}
        total: dict[int, float] = {}
        count: dict[int, int] = {}
        for doc, score in short.items():
            article = self._short[doc][0]
            best[article] = max(best.get(article, 0.0), score)
            total[article] = total.get(article, 0.0) + score
            count[article] = count.get(article, 0) + 1
        for article in set(best) | set(answers):
            score = best.get(article, 0.0)
            if self.aggregate == "blend" and count.get(article, 0) > 1:
                # The best question, plus a little for every other question that also matched.
                score += 0.25 * (total[article] - score) / (count[article] - 1)
            score += self.answer_weight * answers.get(article, 0.0)
            result[article] = min(1.0, score / scale) if scale else 0.0
        return result

    def rank(self, query: str, top: int = 5) -> list[tuple[Any, float]]:
        """The `top` best articles as (id, score), best first; articles sharing no term are left out."""
        scored = [(score, -i) for i, score in enumerate(self.scores(query)) if score > 0]
        scored.sort(reverse=True)  # ties: the article given first wins
        return [(self.ids[-neg], round(score, 6)) for score, neg in scored[:max(0, top)]]
