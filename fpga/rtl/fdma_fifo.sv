// fdma_fifo - small synchronous FIFO used for every queue in the engine
// (response buffers, request-kind routing, chunk queue, descriptor queues).
//
// The read port is "show-ahead": dout is the head entry whenever !empty, taken
// straight from the storage array (state), so consumers can look at the head
// without a pop. count/empty/full are decoded from the registered pointers,
// which is what lets fdma_top drive the *_rsp_ready outputs from state only.
// clr drops every entry (channel flush); it wins over a push in the same cycle.
module fdma_fifo #(
    parameter int W     = 8,
    parameter int DEPTH = 4   // power of two, >= 2
) (
    input  logic                       clk,
    input  logic                       rst,
    input  logic                       clr,
    input  logic                       push,
    input  logic [W-1:0]               din,
    input  logic                       pop,
    output logic [W-1:0]               dout,
    output logic                       empty,
    output logic                       full,
    output logic [$clog2(DEPTH):0]     count
);
  localparam int AW = $clog2(DEPTH);

  logic [W-1:0] mem [DEPTH];
  logic [AW:0]  wp, rp;

  assign count = wp - rp;
  assign empty = (wp == rp);
  assign full  = (count == (AW+1)'(DEPTH));
  assign dout  = mem[rp[AW-1:0]];

  always_ff @(posedge clk) begin
    if (rst || clr) begin
      wp <= '0;
      rp <= '0;
    end else begin
      if (push && !full) wp <= wp + 1'b1;
      if (pop && !empty) rp <= rp + 1'b1;
    end
  end

  // Storage has no reset: contents are only observed behind the pointers.
  always_ff @(posedge clk) begin
    if (push && !full) mem[wp[AW-1:0]] <= din;
  end
endmodule
