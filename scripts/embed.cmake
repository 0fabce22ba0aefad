# Turns a text file into a C source defining `const char mesh_default_types_json[]`.
file(READ ${IN} HEX HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," BYTES "${HEX}")
file(WRITE ${OUT} "/* Generated from ${IN}; do not edit. */\nconst char mesh_default_types_json[] = {${BYTES} 0x00};\n")
