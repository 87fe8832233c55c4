package main

// The completion scripts. Each hands the words typed after "xlb" to
// "xlb __complete" and offers what it prints; the line ":files" asks for
// file names instead.
var completionScripts = map[string]string{
	"bash": `# bash completion for xlb: source <(xlb completion bash)
_xlb() {
	local line=${COMP_LINE:0:COMP_POINT} words cur out
	# Split ourselves: bash's own words break at ':' (IPv6, ports in VIPs).
	read -ra words <<<"$line"
	if [[ $line == *[[:space:]] ]]; then words+=(""); fi
	cur=${words[${#words[@]}-1]}
	out=$("${words[0]}" __complete "${words[@]:1}" 2>/dev/null) || return
	if [[ $out == ":files" ]]; then
		compopt -o filenames 2>/dev/null
		mapfile -t COMPREPLY < <(compgen -f -- "${COMP_WORDS[COMP_CWORD]}")
		return
	fi
	mapfile -t COMPREPLY <<<"$out"
	[[ -z $out ]] && COMPREPLY=()
	# bash replaces only its current word, the part after the last ':'.
	local head=${cur%"${cur##*[:=]}"} i
	if [[ -n $head ]]; then
		for i in "${!COMPREPLY[@]}"; do COMPREPLY[i]=${COMPREPLY[i]#"$head"}; done
	fi
}
complete -F _xlb xlb
`,
	"zsh": `#compdef xlb
# zsh completion for xlb: xlb completion zsh > "${fpath[1]}/_xlb"
_xlb() {
	local -a cands
	cands=("${(@f)$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
	if [[ ${cands[1]} == ":files" ]]; then
		_files
		return
	fi
	cands=(${cands:#})
	(( ${#cands} )) && compadd -Q -- "${cands[@]}"
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
	_xlb "$@"
else
	compdef _xlb xlb
fi
`,
	"fish": `# fish completion for xlb: xlb completion fish > ~/.config/fish/completions/xlb.fish
function __xlb_complete
	set -l words (commandline -opc) (commandline -ct)
	set -l out ($words[1] __complete $words[2..-1] 2>/dev/null)
	if test "$out" = ":files"
		__fish_complete_path (commandline -ct)
		return
	end
	printf '%s\n' $out
end
complete -c xlb -f -a '(__xlb_complete)'
`,
}
