# Job launchers (Kaldi's cmd.sh). Every stage runs locally in this project; set these to
# a queue wrapper to submit elsewhere.
export train_cmd=""
export decode_cmd=""
