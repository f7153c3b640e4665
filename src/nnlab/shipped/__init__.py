"""Files that `nnlab export` copies beside an ONNX graph: plain Python on numpy (and
`tokenizers`), importing nothing of nnlab or torch, so that a user's program runs them
where nnlab is not installed. nnlab reads them too (the taggers' word-piece plan, Viterbi
parity checks), so both sides compute alike. The bottom floor: they import no layer.
"""
