set terminal pngcairo size 1100,600 font 'Sans,11'
set output 'acc_vs_lr.png.normlab-tmp'
set encoding utf8
set key outside right noenhanced
set grid
set offsets graph 0.04, graph 0.04, 0, 0
unset logscale x
set logscale x 2
set xlabel 'peak lr'
set ylabel 'accuracy (%)'
set title 'final accuracy vs peak lr: test (solid, mean ± std over seeds), training (dashed)' noenhanced
plot 'acc_vs_lr_bn.dat' using 1:2:3 with yerrorlines lw 2 lc 1 title 'BatchNorm', 'acc_vs_lr_bn.dat' using 1:4 with lines dt 2 lc 1 notitle, \
     'acc_vs_lr_gn.dat' using 1:2:3 with yerrorlines lw 2 lc 2 title 'GroupNorm', 'acc_vs_lr_gn.dat' using 1:4 with lines dt 2 lc 2 notitle, \
     'acc_vs_lr_ln.dat' using 1:2:3 with yerrorlines lw 2 lc 3 title 'LayerNorm', 'acc_vs_lr_ln.dat' using 1:4 with lines dt 2 lc 3 notitle
set terminal svg size 1100,600 font 'Sans,11'
set output 'acc_vs_lr.svg.normlab-tmp'
set encoding utf8
set key outside right noenhanced
set grid
set offsets graph 0.04, graph 0.04, 0, 0
unset logscale x
set logscale x 2
set xlabel 'peak lr'
set ylabel 'accuracy (%)'
set title 'final accuracy vs peak lr: test (solid, mean ± std over seeds), training (dashed)' noenhanced
plot 'acc_vs_lr_bn.dat' using 1:2:3 with yerrorlines lw 2 lc 1 title 'BatchNorm', 'acc_vs_lr_bn.dat' using 1:4 with lines dt 2 lc 1 notitle, \
     'acc_vs_lr_gn.dat' using 1:2:3 with yerrorlines lw 2 lc 2 title 'GroupNorm', 'acc_vs_lr_gn.dat' using 1:4 with lines dt 2 lc 2 notitle, \
     'acc_vs_lr_ln.dat' using 1:2:3 with yerrorlines lw 2 lc 3 title 'LayerNorm', 'acc_vs_lr_ln.dat' using 1:4 with lines dt 2 lc 3 notitle
set terminal pngcairo size 1500,450 font 'Sans,10'
set output 'telemetry_1.png.normlab-tmp'
set encoding utf8
set grid
unset logscale
set offsets 0, 0, 0, 0
set key inside top right noenhanced
set xlabel 'epoch'
unset ylabel
set multiplot layout 1,3 title 'telemetry: peak lr 0.025 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_1_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_1_ln.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_1_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_1_ln.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_1_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_1_ln.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
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
set multiplot layout 1,3 title 'telemetry: peak lr 0.025 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_1_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_1_ln.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_1_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_1_ln.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_1_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_1_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_1_ln.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
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
set multiplot layout 1,3 title 'telemetry: peak lr 0.05 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_2_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_2_ln.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_2_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_2_ln.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_2_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_2_ln.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
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
set multiplot layout 1,3 title 'telemetry: peak lr 0.05 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_2_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_2_ln.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_2_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_2_ln.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_2_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_2_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_2_ln.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
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
set multiplot layout 1,3 title 'telemetry: peak lr 0.1 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_3_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_3_ln.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_3_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_3_ln.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_3_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_3_ln.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
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
set multiplot layout 1,3 title 'telemetry: peak lr 0.1 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_3_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_3_ln.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_3_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_3_ln.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_3_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_3_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_3_ln.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset multiplot
set terminal pngcairo size 1500,450 font 'Sans,10'
set output 'telemetry_4.png.normlab-tmp'
set encoding utf8
set grid
unset logscale
set offsets 0, 0, 0, 0
set key inside top right noenhanced
set xlabel 'epoch'
unset ylabel
set multiplot layout 1,3 title 'telemetry: peak lr 0.2 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_4_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_4_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_4_ln.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_4_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_4_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_4_ln.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_4_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_4_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_4_ln.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset multiplot
set terminal svg size 1500,450 font 'Sans,10'
set output 'telemetry_4.svg.normlab-tmp'
set encoding utf8
set grid
unset logscale
set offsets 0, 0, 0, 0
set key inside top right noenhanced
set xlabel 'epoch'
unset ylabel
set multiplot layout 1,3 title 'telemetry: peak lr 0.2 (means over seeds)' noenhanced
set logscale y
set format y '%.0e'
set title 'effective lr  lr/|w|^2'
plot 'telemetry_4_bn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_4_gn.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_4_ln.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'gradient norm (rms over convs)'
plot 'telemetry_4_bn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_4_gn.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_4_ln.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset logscale y
set format y '%g'
set title 'BatchNorm train/eval gap (pp)'
plot 'telemetry_4_bn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 1 title 'BatchNorm', \
     'telemetry_4_gn.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 2 title 'GroupNorm', \
     'telemetry_4_ln.dat' using 1:4 with linespoints lw 2 pt 7 ps 0.5 lc 3 title 'LayerNorm'
unset multiplot
