# Speaker-adapted GMM front end (--gmm-stage tri3), sourced by hybrid_kd.sh after the tri1 paths:
# tri2 = LDA+MLLT on spliced MFCCs (Kaldi train_lda_mllt.sh), tri3 = SAT with per-speaker fMLLR
# (train_sat.sh), each decoded (tri3: speaker-independent pass with si/final.mdl, then fMLLR from
# its best paths and an adapted pass: decode_fmllr.sh). tri3's alignments (train: fMLLR from the
# reference text, align_fmllr.sh; dev/test: from first-pass hypotheses) label the DNNs, and with
# --dnn-input fmllr its adapted 40-dim features are the DNN input.
case "$gmm_stage" in tri1|tri3) ;; *) echo "$0: --gmm-stage must be tri1 or tri3 (got $gmm_stage)" >&2; exit 1 ;; esac
case "$dnn_input" in
  fbank) ;;
  fmllr) [ "$gmm_stage" = tri3 ] || { echo "$0: --dnn-input fmllr needs --gmm-stage tri3" >&2; exit 1; } ;;
  *) echo "$0: --dnn-input must be fbank or fmllr (got $dnn_input)" >&2; exit 1 ;;
esac
tri2=$gmm_exp/tri2
tri3=$gmm_exp/tri3
if [ "$gmm_stage" = tri3 ]; then
  ali=$gmm_exp/tri3_ali; label_graph=$tri3/graph_bg; label_gmm=$tri3
fi
if [ "$dnn_input" = fmllr ]; then fbank=$tri3/fmllr_feats; fi   # $fbank/<set>: the DNN input stores (stage 4 writes)

# sat_view MODEL SET: the view of $mfcc/SET that MODEL's LDA+MLLT expects (speaker-independent);
# sat_adapted SET: tri3's fMLLR-adapted view of SET.
sat_view() { echo "$1/views/si_$2"; }
sat_adapted() { echo "$tri3/views/fmllr_$1"; }

sat_steps() {
  local set
  echo "stage 4 (--gmm-stage tri3): tri2 (LDA+MLLT), tri3 (SAT), their decodes, tri3 alignments"
  fresh_step train_tri2 "$tri2" kd train-lda-mllt "${job_opts[@]}" --num-leaves "$num_leaves" --tot-gauss "$tot_gauss" \
    --num-utts "$tri_num_utts" "$mfcc/train" "$train_dir" "$lang" "$tri1_ali" "$tri2"
  for set in $sets; do
    fresh_step view_tri2_$set "$(sat_view "$tri2" $set)" kd feature-view "$tri2" "$mfcc/$set" "$(sat_view "$tri2" $set)"
  done
  fresh_step align_tri2_train "$gmm_exp/tri2_ali" kd align "${job_opts[@]}" "$(sat_view "$tri2" train)" "$train_dir" \
    "$lang" "$tri2" "$gmm_exp/tri2_ali"
  fresh_step make_graph_tri2 "$tri2/graph_bg" kd make-graph "$lang_test" "$tri2" "$tri2/graph_bg"
  fresh_step decode_tri2_test "$tri2/decode_test" kd decode "$tri2/graph_bg" "$tri2" "$tri2/decode_test" \
    --feats "$(sat_view "$tri2" test)" --text "$test_dir/text" --dev-feats "$(sat_view "$tri2" dev)" \
    --dev-text "$dev_dir/text" "${decode_opts[@]}"

  fresh_step train_tri3 "$tri3" kd train-sat "${job_opts[@]}" --num-leaves "$num_leaves" --tot-gauss "$tot_gauss" \
    --num-utts "$tri_num_utts" "$mfcc/train" "$train_dir" "$lang" "$gmm_exp/tri2_ali" "$tri3"
  fresh_step make_graph_tri3 "$tri3/graph_bg" kd make-graph "$lang_test" "$tri3" "$tri3/graph_bg"
  for set in $sets; do
    fresh_step view_tri3_$set "$(sat_view "$tri3" $set)" kd feature-view "$tri3" "$mfcc/$set" "$(sat_view "$tri3" $set)"
    if [ "$set" = dev ] || [ "$set" = test ]; then   # decode_fmllr.sh: first pass, fMLLR from its best paths
      fresh_step adapt_tri3_$set "$(sat_adapted $set)" kd fmllr-first-pass "${job_opts[@]}" "$tri3/graph_bg" "$tri3" \
        "$mfcc/$set" "${set_dir[$set]}" "$lang" "$(sat_adapted $set)"
    else                                              # align_fmllr.sh: fMLLR from the reference text
      fresh_step adapt_tri3_$set "$(sat_adapted $set)" kd adapt-feats "${job_opts[@]}" "$tri3" "$mfcc/$set" \
        "${set_dir[$set]}" "$lang" "$(sat_adapted $set)"
    fi
  done
  fresh_step decode_tri3_si_test "$tri3/decode_si_test" kd decode "$tri3/graph_bg" "$tri3/si" "$tri3/decode_si_test" \
    --feats "$(sat_view "$tri3" test)" --text "$test_dir/text" --dev-feats "$(sat_view "$tri3" dev)" \
    --dev-text "$dev_dir/text" "${decode_opts[@]}"
  fresh_step decode_tri3_test "$tri3/decode_test" kd decode "$tri3/graph_bg" "$tri3" "$tri3/decode_test" \
    --feats "$(sat_adapted test)" --text "$test_dir/text" --dev-feats "$(sat_adapted dev)" \
    --dev-text "$dev_dir/text" "${decode_opts[@]}"
  for set in $sets; do                                # DNN labels: every set aligned with tri3 on adapted features
    fresh_step align_tri3_$set "$(ali_of $set "$gmm_exp/tri3_ali")" kd align "${job_opts[@]}" "$(sat_adapted $set)" \
      "${set_dir[$set]}" "$lang" "$tri3" "$(ali_of $set "$gmm_exp/tri3_ali")"
    if [ "$dnn_input" = fmllr ]; then
      fresh_step fmllr_feats_$set "$fbank/$set" kd write-feats "$(sat_adapted $set)" "$fbank/$set"
    fi
  done
}
