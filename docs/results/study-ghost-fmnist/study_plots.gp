set terminal pngcairo size 1100,600 font 'Sans,11'
set output 'acc_vs_ghost_batch.png.normlab-tmp'
set encoding utf8
set key outside right noenhanced
set grid
set offsets graph 0.04, graph 0.04, 0, 0
unset logscale x
set logscale x 2
set xlabel 'ghost batch'
set ylabel 'accuracy (%)'
set title 'final accuracy vs ghost batch: test (solid, mean ± std over seeds), training (dashed)' noenhanced
plot 'acc_vs_ghost_batch_bn.dat' using 1:2:3 with yerrorlines lw 2 lc 1 title 'BatchNorm', 'acc_vs_ghost_batch_bn.dat' using 1:4 with lines dt 2 lc 1 notitle, \
     'acc_vs_ghost_batch_gn.dat' using 1:2:3 with yerrorlines lw 2 lc 2 title 'GroupNorm', 'acc_vs_ghost_batch_gn.dat' using 1:4 with lines dt 2 lc 2 notitle
set terminal svg size 1100,600 font 'Sans,11'
set output 'acc_vs_ghost_batch.svg.normlab-tmp'
set encoding utf8
set key outside right noenhanced
set grid
set offsets graph 0.04, graph 0.04, 0, 0
unset logscale x
set logscale x 2
set xlabel 'ghost batch'
set ylabel 'accuracy (%)'
set title 'final accuracy vs ghost batch: test (solid, mean ± std over seeds), training (dashed)' noenhanced
plot 'acc_vs_ghost_batch_bn.dat' using 1:2:3 with yerrorlines lw 2 lc 1 title 'BatchNorm', 'acc_vs_ghost_batch_bn.dat' using 1:4 with lines dt 2 lc 1 notitle, \
     'acc_vs_ghost_batch_gn.dat' using 1:2:3 with yerrorlines lw 2 lc 2 title 'GroupNorm', 'acc_vs_ghost_batch_gn.dat' using 1:4 with lines dt 2 lc 2 notitle
set terminal pngcairo size 1500,450 font 'Sans,10'
set output 'telemetry_1.png.normlab-tmp'
set encoding utf8
set grid
unset logscale
set offsets 0, 0, 0, 0
set key inside top right noenhanced
set xlabel 'epoch'
unset ylabel
set multiplot layout 1,3 title 'telemetry: ghost batch 2 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_1_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_1_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_1_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset multiplot
set terminal svg size 1500,450 font 'Sans,10'
set output 'telemetry_1.svg.normlab-tmp'
set encoding utf8
set grid
unset logscale
set offsets 0, 0, 0, 0
set key inside top right noenhanced
set xlabel 'epoch'
unset ylabel
set multiplot layout 1,3 title 'telemetry: ghost batch 2 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_1_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_1_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_1_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset multiplot
set terminal pngcairo size 1500,450 font 'Sans,10'
set output 'telemetry_2.png.normlab-tmp'
set encoding utf8
set grid
unset logscale
set offsets 0, 0, 0, 0
set key inside top right noenhanced
set xlabel 'epoch'
unset ylabel
set multiplot layout 1,3 title 'telemetry: ghost batch 8 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_2_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_2_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_2_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset multiplot
set terminal svg size 1500,450 font 'Sans,10'
set output 'telemetry_2.svg.normlab-tmp'
set encoding utf8
set grid
unset logscale
set offsets 0, 0, 0, 0
set key inside top right noenhanced
set xlabel 'epoch'
unset ylabel
set multiplot layout 1,3 title 'telemetry: ghost batch 8 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_2_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_2_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_2_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset multiplot
set terminal pngcairo size 1500,450 font 'Sans,10'
set output 'telemetry_3.png.normlab-tmp'
set encoding utf8
set grid
unset logscale
set offsets 0, 0, 0, 0
set key inside top right noenhanced
set xlabel 'epoch'
unset ylabel
set multiplot layout 1,3 title 'telemetry: ghost batch 128 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_3_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_3_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_3_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset multiplot
set terminal svg size 1500,450 font 'Sans,10'
set output 'telemetry_3.svg.normlab-tmp'
set encoding utf8
set grid
unset logscale
set offsets 0, 0, 0, 0
set key inside top right noenhanced
set xlabel 'epoch'
unset ylabel
set multiplot layout 1,3 title 'telemetry: ghost batch 128 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_3_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_3_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_3_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm'
unset multiplot
