"""Hardware: the Schedule (one plan per layer) and the two emitters (HLS C++, Verilog) plus their runners."""
