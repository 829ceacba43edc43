#!/usr/bin/env bash
# Plants each protocol bug named in issue 8 (and three more) alone, runs the tests that guard it, restores the
# file, and prints which tests went red. Every line must end "caught". Run from the repository root:
#     bash benchmarks/mutation_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# Whatever happens (Ctrl-C included), every planted file goes back.
restore() { for backup in $(git ls-files -m --others --exclude-standard | grep '\.mutation-backup$'); do mv "$backup" "${backup%.mutation-backup}"; done; }
trap restore EXIT

mutate() {  # name file old new -- pytest args
    local name=$1 file=$2 old=$3 new=$4
    shift 5
    cp "$file" "$file.mutation-backup"
    "$PY" - "$file" "$old" "$new" <<'PY' || { echo "$name: pattern not found"; restore; return; }
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
assert text.count(old) == 1, f"{path}: {old!r} found {text.count(old)} times"
open(path, "w").write(text.replace(old, new))
PY
    local failed
    failed=$("$PY" -m pytest -q -rfE -p no:cacheprovider "$@" 2>&1 | grep -E '^(FAILED|ERROR)' | sed 's/ - .*//' | tr '\n' ' ')
    restore
    if [ -n "$failed" ]; then echo "$name: caught by $failed"; else echo "$name: NOT CAUGHT"; fi
}

mutate "mix multiplies by C^T" datamix_cli/protocol/mixing.py "    return (c @ flat).reshape(h.shape)" "    return (c.swapaxes(-1, -2) @ flat).reshape(h.shape)" -- tests/protocol/test_protocol_oracle.py tests/protocol/test_mixing.py
mutate "exported tail de-mixes with (C^-1)^T" datamix_cli/protocol/edge_modules.py "        return self.tail(demix(c_inv, z))" "        return self.tail(demix(c_inv.T, z))" -- tests/protocol/test_protocol_oracle.py tests/serving/test_serve.py -k "serve_local or infer"
mutate "training de-mixes with C" datamix_cli/training/mixed.py "    z = mix(torch.linalg.inv(c.double()).to(z_mixed.dtype), z_mixed" "    z = mix(c.to(z_mixed.dtype), z_mixed" -- tests/protocol/test_protocol_oracle.py tests/pipeline/test_split.py -k "training or accuracy_table or evaluation"
mutate "de-mixing FLOPs at the head cut" partitioners/select.py "        return mixing_flops(self.tail_cut, self.k)" "        return mixing_flops(self.head_cut, self.k)" -- tests/partitioners/test_select.py
mutate "verification reports the mean error" exporters/verify.py "        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))))" "        worst = max(worst, float(np.mean(np.abs(got.astype(np.float64) - want.astype(np.float64)))))" -- tests/exporters/test_exporters_registry.py
mutate "infer --json prints C" datamix_cli/commands/serve.py '"scores": logits.tolist()}' '"scores": logits.tolist(), "c": [g[1].tolist() for g in result.groups]}' -- tests/end_to_end/test_secrets_end_to_end.py
mutate "verdict on absolute SSIM" datamix_cli/privacy/judging.py '        ssim_adv, psnr_adv = r["ssim_advantage"], r["psnr_advantage_db"]' '        ssim_adv, psnr_adv = r["ssim"]["mean"] - 0.2, r["psnr_db"]["mean"] - 10' -- tests/privacy/test_audit.py -k "control or verdict"
mutate "no Connection: close after 413" datamix_cli/serving/server.py '    headers = {"Connection": "close"} if status == 413 else None' '    headers = None' -- tests/serving/test_serve.py -k chunked
