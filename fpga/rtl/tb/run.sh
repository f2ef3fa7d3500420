#!/bin/sh
# Compile and run the fdma RTL testbench with Icarus (from any directory).
# Last line of output: "N passed, M failed"; exit status non-zero on failure.
cd "$(dirname "$0")/../../.." || exit 2
VVP=/tmp/fdma_tb.$$.vvp
LOG=/tmp/fdma_tb.$$.log
rm -f "$VVP"
# Icarus reports "constant selects in always_* processes" as a sorry note:
# it only widens the sensitivity list, so it is filtered out.
iverilog -g2012 -o "$VVP" -I fpga/rtl/tb \
  fpga/rtl/generated/fdma_hw_pkg.sv fpga/rtl/*.sv fpga/rtl/tb/fdma_tb.sv 2>&1 \
  | grep -v 'sorry: constant selects in always_\* processes'
if [ ! -f "$VVP" ]; then
  echo "0 passed, 1 failed"
  exit 1
fi
vvp -n "$VVP" > "$LOG" 2>&1
grep -v -E '^[0-9]+ passed, [0-9]+ failed$' "$LOG"
RESULT=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOG" | tail -n 1)
rm -f "$VVP" "$LOG"
[ -n "$RESULT" ] || RESULT="0 passed, 1 failed"
echo "$RESULT"
case "$RESULT" in
  *" passed, 0 failed") exit 0 ;;
  *) exit 1 ;;
esac
