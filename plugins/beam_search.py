"""ASTER's beam search (aster.pytorch's ``AttentionRecognitionHead.beam_search``, after IBM
pytorch-seq2seq's ``TopKDecoder``). The head it runs on has ``decoder`` (one decoding step,
``decoder(feats, state, y_prev, x_proj) -> (logits, state)``, and ``decoder.attention_unit.
project``), ``num_classes`` (<BOS> is that index), ``s_dim`` and ``max_len_labels``.

Why apart from ``aster.py``: it is the one algorithm of the recognizer that is not a layer
(84% of ASTER's CPU evaluation time), with its own early stop and its backtracking.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def beam_search(
    head, x: torch.Tensor, beam_width: int, eos: int, stop_early: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference beam search (aster.pytorch, after IBM pytorch-seq2seq's TopKDecoder).

    A beam that emits EOS stops growing (its score is set to -inf); backtracking puts
    ended beams back into the last slots of the k best, as the reference does. Returns
    the best beam's symbols (B, max_len) and each symbol's log-probability given its
    prefix (B, max_len).

    The reference runs all ``max_len_labels`` steps. ``stop_early`` stops once every
    image has had k EOS events, with the same result up to the best beam's EOS (what is
    read): backtracking writes the ended beams into the k slots cyclically, latest step
    first, so with k or more events the slots end up holding the k earliest ones, and
    the steps up to the stop are computed identically; a later EOS cannot change which
    beam wins (barring an exact tie of scores). Symbols past the stop are EOS, log-probs
    0; only the symbols after the best beam's EOS, never read, differ from the reference.
    """
    b, length, d = x.size()
    k, c = beam_width, head.num_classes
    feats = x.unsqueeze(1).expand(b, k, length, d).reshape(b * k, length, d)
    x_proj = head.decoder.attention_unit.project(x)
    x_proj = x_proj.unsqueeze(1).expand(b, k, length, -1).reshape(b * k, length, -1)
    state = x.new_zeros(1, b * k, head.s_dim)
    pos_index = (torch.arange(b, device=x.device) * k).view(-1, 1)
    scores = torch.full((b * k, 1), -float("inf"), device=x.device)  # float32 under AMP too
    scores[::k] = 0.0
    y_prev = torch.full((b * k,), c, dtype=torch.long, device=x.device)
    stored_scores, stored_preds, stored_symbols, stored_logp = [], [], [], []
    eos_events = torch.zeros(b, dtype=torch.long, device=x.device)
    for _ in range(head.max_len_labels):
        output, state = head.decoder(feats, state, y_prev, x_proj)
        log_probs = F.log_softmax(output.float(), dim=1)
        expanded = scores.repeat(1, c)
        expanded += log_probs
        top, candidates = expanded.view(b, -1).topk(k, dim=1)
        y_prev = (candidates % c).view(b * k)
        scores = top.view(b * k, 1)
        preds = (
            torch.div(candidates, c, rounding_mode="floor") + pos_index.expand_as(candidates)
        ).view(b * k, 1)
        state = state.index_select(1, preds.squeeze(1))
        stored_logp.append(log_probs[preds.squeeze(1), y_prev])
        stored_scores.append(scores.clone())
        scores = scores.masked_fill(y_prev.view(-1, 1).eq(eos), -float("inf"))
        stored_preds.append(preds)
        stored_symbols.append(y_prev)
        if stop_early:
            eos_events += y_prev.view(b, k).eq(eos).sum(1)
            if bool((eos_events >= k).all()):
                break
    ids, logp = _backtrack(
        stored_scores, stored_preds, stored_symbols, stored_logp, b, k, eos, pos_index
    )
    missing = head.max_len_labels - ids.shape[1]
    return F.pad(ids, (0, missing), value=eos), F.pad(logp, (0, missing))


def _backtrack(stored_scores, stored_preds, stored_symbols, stored_logp, b, k, eos, pos_index):
    """The k best beams' symbols and log-probs, walked back from the last step; ended beams
    (EOS) are put back into the last slots of each image's k, as the reference does."""
    sorted_score, sorted_idx = stored_scores[-1].view(b, k).topk(k)
    s = sorted_score.clone()
    eos_found = [0] * b
    pointer = (sorted_idx + pos_index.expand_as(sorted_idx)).view(b * k)
    symbols, logps = [], []
    for t in range(len(stored_symbols) - 1, -1, -1):
        current = stored_symbols[t].index_select(0, pointer)
        current_logp = stored_logp[t].index_select(0, pointer)
        pointer = stored_preds[t].index_select(0, pointer).view(-1)
        ended = stored_symbols[t].eq(eos).nonzero()
        for i in range(ended.size(0) - 1, -1, -1):
            idx = int(ended[i, 0])
            bi = idx // k
            slot = k - (eos_found[bi] % k) - 1
            eos_found[bi] += 1
            res = bi * k + slot
            pointer[res] = stored_preds[t][idx, 0]
            current[res] = stored_symbols[t][idx]
            current_logp[res] = stored_logp[t][idx]
            s[bi, slot] = stored_scores[t][idx, 0]
        symbols.append(current)
        logps.append(current_logp)
    _, order = s.topk(k)
    order = (order + pos_index.expand_as(order)).view(b * k)
    best = [step.index_select(0, order).view(b, k)[:, 0] for step in reversed(symbols)]
    best_logp = [step.index_select(0, order).view(b, k)[:, 0] for step in reversed(logps)]
    return torch.stack(best, 1), torch.stack(best_logp, 1)
